-- Hardening (issue 11): one bad row never stops the others, and the audit's
-- "who" is the session's own. What this migration adds:
--
-- 1. etlctl.readable_status(doc): the status document as etlctl reads it,
--    bounded: whole when it is at most 1 MB long and nested at most 64 levels;
--    otherwise part by part, leaving out what is nested too deep (or, in a
--    document over 1 MB, longer than 64 KB), and listing what it left out. A
--    document nested 1,000 levels deep made Python's JSON reader raise
--    RecursionError, and every sweep, doctor and status failed on it.
-- 2. etlctl.without_paths(doc, paths) and etlctl.ready_status(doc, drop): the
--    document a reset writes (every phase idle, the reset keys cleared), without
--    the parts `reset --force` drops because etlctl cannot read them.
-- 3. A trigger on etlctl.audit that stamps db_user with session_user, whatever
--    the INSERT says: a role that may write audit rows (etlctl's own statements
--    insert them) cannot write them in someone else's name.
-- Nothing here touches etl_jobs.

-- 1.
CREATE OR REPLACE FUNCTION etlctl.readable_status(doc jsonb, OUT status jsonb, OUT unread jsonb)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    -- Keep in step with etlctl/core/document.py (MAX_BYTES, MAX_PART_BYTES, MAX_DEPTH).
    max_bytes CONSTANT integer := 1048576;
    max_part CONSTANT integer := 65536;
    max_depth CONSTANT integer := 64;
    big boolean;
    top record;
    step record;
    field record;
    left_out jsonb;
    steps jsonb;
    body jsonb;
BEGIN
    status := doc;
    unread := '[]';
    IF doc IS NULL THEN
        RETURN;
    END IF;
    big := octet_length(doc::text) > max_bytes;
    -- `strict $.**{N}`: the values N levels below the document (an array is a level too).
    IF NOT big AND NOT jsonb_path_exists(doc, format('strict $.**{%s}', max_depth)::jsonpath) THEN
        RETURN;
    END IF;
    IF jsonb_typeof(doc) <> 'object' THEN
        status := NULL;
        unread := etlctl.unread_part('[]', doc, 0, big, max_part, max_depth);
        RETURN;
    END IF;
    -- Part by part: each key; within steps, each step; within a step, each of its keys.
    status := '{}';
    FOR top IN SELECT key, value FROM jsonb_each(doc) LOOP
        IF top.key = 'steps' AND jsonb_typeof(top.value) = 'object' THEN
            steps := '{}';
            FOR step IN SELECT key, value FROM jsonb_each(top.value) LOOP
                IF jsonb_typeof(step.value) = 'object' THEN
                    body := '{}';
                    FOR field IN SELECT key, value FROM jsonb_each(step.value) LOOP
                        left_out := etlctl.unread_part(jsonb_build_array('steps', step.key, field.key), field.value,
                                                       3, big, max_part, max_depth);
                        body := body || jsonb_build_object(field.key, CASE WHEN left_out = '[]' THEN field.value END);
                        unread := unread || left_out;
                    END LOOP;
                ELSE
                    left_out := etlctl.unread_part(jsonb_build_array('steps', step.key), step.value, 2, big,
                                                   max_part, max_depth);
                    body := CASE WHEN left_out = '[]' THEN step.value ELSE 'null' END;
                    unread := unread || left_out;
                END IF;
                steps := steps || jsonb_build_object(step.key, body);
            END LOOP;
            status := status || jsonb_build_object('steps', steps);
        ELSE
            left_out := etlctl.unread_part(jsonb_build_array(top.key), top.value, 1, big, max_part, max_depth);
            status := status || jsonb_build_object(top.key, CASE WHEN left_out = '[]' THEN top.value END);
            unread := unread || left_out;
        END IF;
    END LOOP;
END
$$;

-- [{"path", "bytes", "deep"}] when `value`, found `level` levels below the top of a document,
-- is left out by etlctl.readable_status (nested too deep; or, in a big document, too long); else [].
CREATE OR REPLACE FUNCTION etlctl.unread_part(path jsonb, value jsonb, level integer, big boolean,
                                              max_part integer, max_depth integer) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN deep OR (big AND bytes > max_part)
                THEN jsonb_build_array(jsonb_build_object('path', path, 'bytes', bytes, 'deep', deep))
                ELSE '[]' END
    FROM (SELECT octet_length(value::text) AS bytes,
                 jsonb_path_exists(value, format('strict $.**{%s}', max_depth - level)::jsonpath) AS deep) part
$$;

-- 2.
-- The document without these parts (each a path of keys from the top; [] is the whole document).
CREATE OR REPLACE FUNCTION etlctl.without_paths(doc jsonb, paths jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    path jsonb;
BEGIN
    FOR path IN SELECT value FROM jsonb_array_elements(coalesce(paths, '[]')) LOOP
        IF jsonb_array_length(path) = 0 THEN
            RETURN '{}';
        END IF;
        doc := doc #- ARRAY(SELECT jsonb_array_elements_text(path));
    END LOOP;
    RETURN doc;
END
$$;

-- What a reset writes, as the existing reset endpoint does: overall READY, token
-- and etlctl's reset keys cleared, reset_attempt the integer 0 (the UI types it
-- as a number), every phase of every step idle (order, display names and
-- unknown keys kept; a document without steps keeps having none). `drop` lists
-- the parts left out first (reset --force: what etlctl cannot read); a document
-- that is not an object starts over as one.
CREATE OR REPLACE FUNCTION etlctl.ready_status(doc jsonb, drop jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT kept || jsonb_build_object(
               'overall', 'READY', 'token', NULL, 'reset_stage', NULL, 'reset_deadline', NULL,
               'reset_attempt', 0, 'reset_gave_up_at', NULL, 'reset_token', NULL)
           || CASE WHEN kept ? 'steps' THEN jsonb_build_object('steps', etlctl.idle_steps(kept -> 'steps'))
                   ELSE '{}' END
    FROM (SELECT CASE WHEN jsonb_typeof(doc) = 'object' THEN etlctl.without_paths(doc, drop) ELSE '{}' END AS kept) k
$$;

-- 3.
-- Who wrote an audit row is the session's user, whatever the row says (the login
-- role, also after SET ROLE). The time stays the statement's: etlctl's clock seam.
CREATE OR REPLACE FUNCTION etlctl.audit_who() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.db_user := session_user;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS audit_who ON etlctl.audit;
CREATE TRIGGER audit_who BEFORE INSERT ON etlctl.audit
    FOR EACH ROW EXECUTE FUNCTION etlctl.audit_who();
ALTER TABLE etlctl.audit ALTER COLUMN db_user SET DEFAULT session_user;
