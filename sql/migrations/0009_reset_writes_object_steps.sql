-- A reset never writes "steps": null (issue 9), also when the document already
-- held it: `reset --force` of a document whose steps (or one step) was not an
-- object kept it as it was, and the existing UI reads steps, and each step, as
-- objects. etlctl.ready_steps repairs them; etlctl.ready_status uses it.
-- Nothing here touches etl_jobs.

-- The steps a reset writes: every phase of every step idle. Unlike idle_steps, a
-- reset repairs what is not an object (a forced reset of a malformed document):
-- the existing UI reads steps, and each step, as objects, so a READY row never
-- carries "steps": null, a string, or a step body that is not an object.
CREATE OR REPLACE FUNCTION etlctl.ready_steps(steps jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(steps) = 'object' THEN
        coalesce((
            SELECT jsonb_object_agg(key, CASE WHEN jsonb_typeof(value) = 'object' THEN value ELSE '{}' END
                                         || '{"extraction": "idle", "transform": "idle", "embedding": "idle"}')
            FROM jsonb_each(steps)), '{}')
    ELSE '{}' END
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
           || CASE WHEN kept ? 'steps' THEN jsonb_build_object('steps', etlctl.ready_steps(kept -> 'steps'))
                   ELSE '{}' END
    FROM (SELECT CASE WHEN jsonb_typeof(doc) = 'object' THEN etlctl.without_paths(doc, drop) ELSE '{}' END AS kept) k
$$;
