-- The complete schema of a fresh install: the truth. A test proves that an
-- existing-system database plus every migration ends up with the same schema.
CREATE TABLE IF NOT EXISTS tenants (
    id serial PRIMARY KEY,
    name varchar NOT NULL UNIQUE,
    tier varchar(20) NOT NULL DEFAULT 'premium',
    active boolean NOT NULL DEFAULT true,
    created_at timestamp DEFAULT now(),
    last_updated_at timestamp DEFAULT now()
);

CREATE TABLE IF NOT EXISTS integrations (
    id serial PRIMARY KEY,
    provider varchar(50) NOT NULL,
    type varchar(50) NOT NULL,
    base_url text,
    settings jsonb DEFAULT '{}',
    tenant_id integer NOT NULL REFERENCES tenants (id),
    active boolean DEFAULT true,
    created_at timestamptz DEFAULT now(),
    last_updated_at timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS etl_jobs (
    id serial PRIMARY KEY,
    job_name varchar NOT NULL,
    status jsonb NOT NULL DEFAULT '{"overall": "READY", "steps": {}}',
    schedule_interval_minutes integer NOT NULL DEFAULT 360,
    retry_interval_minutes integer NOT NULL DEFAULT 15,
    last_sync_date timestamp,
    last_run_started_at timestamp,
    last_run_finished_at timestamp,
    error_message text,
    retry_count integer DEFAULT 0,
    checkpoint_data boolean NOT NULL DEFAULT false,
    next_run timestamp,
    integration_id integer REFERENCES integrations (id),
    tenant_id integer NOT NULL REFERENCES tenants (id),
    active boolean NOT NULL DEFAULT true,
    created_at timestamp DEFAULT now(),
    last_updated_at timestamp DEFAULT now(),
    CONSTRAINT etl_jobs_status_check CHECK (
        status ? 'overall'
        AND status ->> 'overall' IN ('READY', 'RUNNING', 'FINISHED', 'FAILED', 'RATE_LIMIT_REACHED')
    ),
    UNIQUE (job_name, tenant_id)
);

CREATE SCHEMA IF NOT EXISTS etlctl;

CREATE TABLE IF NOT EXISTS etlctl.migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Job kinds and their ordered steps: data an operator changes without a release.
-- A job's kind is the one named like the job, else like its integration's provider
-- (case-insensitively; kind names are stored lower-case). A kind decides which
-- steps a new run gets (order, display name) and the first message of a run:
-- message_provider is the `provider` the workers accept (NULL: the kind defines
-- no message, and its jobs are never started); message_extra holds the kind's
-- further fields of every message etlctl queues for it.
CREATE TABLE IF NOT EXISTS etlctl.job_kinds (
    name text PRIMARY KEY CHECK (name = lower(name) AND name <> ''),
    description text NOT NULL DEFAULT '',
    message_provider text CHECK (message_provider <> ''),
    message_extra jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(message_extra) = 'object')
);

CREATE TABLE IF NOT EXISTS etlctl.kind_steps (
    kind text NOT NULL REFERENCES etlctl.job_kinds (name) ON UPDATE CASCADE ON DELETE CASCADE,
    position integer NOT NULL CHECK (position > 0),
    step text NOT NULL CHECK (step <> ''),
    display_name text NOT NULL DEFAULT '',
    -- schedule-next may queue this step's extraction once the steps before it have
    -- finished. Off by default: the existing workers chain their own steps.
    chain boolean NOT NULL DEFAULT false,
    PRIMARY KEY (kind, step),
    -- Deferrable so that an operator can swap two positions in one transaction.
    CONSTRAINT kind_steps_kind_position_key UNIQUE (kind, position) DEFERRABLE INITIALLY IMMEDIATE
);

-- How a step may end, by step name, whatever the kind (the existing check-completion
-- endpoint judges every step of the document by its name). A step without a row
-- must finish in all three phases; 'finished_or_idle': or stay idle in all three.
CREATE TABLE IF NOT EXISTS etlctl.step_rules (
    step text PRIMARY KEY CHECK (step <> ''),
    rule text NOT NULL CHECK (rule IN ('finished', 'finished_or_idle'))
);

-- The seeded kinds and steps of the existing system (existing-system-contract.md §2, §3).
INSERT INTO etlctl.job_kinds (name, description, message_provider, message_extra) VALUES
    ('jira', 'Jira: five steps; jira_dev_status may stay idle (no issues extracted)', 'jira', '{}'),
    ('github', 'GitHub: repositories must finish; PRs may stay idle when none were extracted', 'github',
     '{"first_item": true, "last_item": false}'),
    ('wex fabric', 'WEX Fabric: one step; no worker takes it yet, so it defines no message', NULL, '{}'),
    ('wex ad', 'WEX AD: one step; no worker takes it yet, so it defines no message', NULL, '{}')
ON CONFLICT (name) DO NOTHING;

-- A kind's steps are seeded only while it has none: steps an operator removed stay removed.
INSERT INTO etlctl.kind_steps (kind, position, step, display_name)
SELECT v.kind, v.position, v.step, v.display_name
FROM (VALUES
    ('jira', 1, 'jira_projects_and_issue_types', 'Projects & Types'),
    ('jira', 2, 'jira_statuses_and_relationships', 'Statuses & Relations'),
    ('jira', 3, 'jira_issues_with_changelogs', 'Issues & Changelogs'),
    ('jira', 4, 'jira_dev_status', 'Development Status'),
    ('jira', 5, 'jira_sprint_reports', 'Sprint Reports'),
    ('github', 1, 'github_repositories', 'Repositories'),
    ('github', 2, 'github_prs_commits_reviews_comments', 'PRs, Commits, Reviews & Comments'),
    ('wex fabric', 1, 'wex_fabric_data', 'Fabric Data'),
    ('wex ad', 1, 'wex_ad_users', 'AD Users')
) AS v (kind, position, step, display_name)
WHERE NOT EXISTS (SELECT 1 FROM etlctl.kind_steps s WHERE s.kind = v.kind);

INSERT INTO etlctl.step_rules (step, rule) VALUES
    ('jira_dev_status', 'finished_or_idle'),
    ('github_commits', 'finished_or_idle'),
    ('github_reviews', 'finished_or_idle'),
    ('github_pull_requests', 'finished_or_idle'),
    ('github_prs_commits_reviews_comments', 'finished_or_idle')
ON CONFLICT (step) DO NOTHING;

-- Every state change etlctl makes, written in the same transaction as the change.
-- No foreign key to etl_jobs: history outlives a deleted job.
CREATE TABLE IF NOT EXISTS etlctl.audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    job_id integer NOT NULL,
    tenant_id integer,
    from_state text,
    to_state text,
    token text,
    command text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    db_user text NOT NULL DEFAULT session_user,  -- stamped by the trigger audit_who, whatever an INSERT says
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_job_id_at ON etlctl.audit (job_id, at);

-- The transactional outbox: extraction messages for the workers, written in the
-- same transaction that starts a run (which notifies etlctl_queue). A relay
-- publishes them to RabbitMQ in id order (or a person takes one with `etlctl
-- queue claim`); (token, step, phase) makes queueing idempotent.
CREATE TABLE IF NOT EXISTS etlctl.queue (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    job_id integer NOT NULL,
    tenant_id integer NOT NULL,
    integration_id integer,
    token text NOT NULL,
    step text NOT NULL,
    phase text NOT NULL DEFAULT 'extraction' CHECK (phase IN ('extraction', 'transform', 'embedding')),
    message jsonb NOT NULL,
    claimed_at timestamptz,
    claimed_by text,
    done_at timestamptz,
    -- The broker queue the message goes to: extraction_queue_<tenants.tier>.
    queue_name text,
    -- The relay's bookkeeping (migration 0006): published only once the broker
    -- confirmed it; every attempt counted, with the last error; refusals are the
    -- broker's nacks and returns; skipped: never published, its run was over.
    published_at timestamptz,
    published_by text,
    attempts integer NOT NULL DEFAULT 0,
    last_attempt_at timestamptz,
    last_error text,
    refusals integer NOT NULL DEFAULT 0,
    skipped_at timestamptz,
    skip_reason text,
    CONSTRAINT queue_token_step_phase_key UNIQUE (token, step, phase),
    CONSTRAINT queue_attempts_check CHECK (attempts >= 0 AND refusals >= 0 AND refusals <= attempts),
    -- A message is taken one way only: claimed by hand, published, or skipped.
    CONSTRAINT queue_one_way_check CHECK (num_nonnulls(claimed_at, published_at, skipped_at) <= 1),
    CONSTRAINT queue_skip_reason_check CHECK ((skipped_at IS NULL) = (skip_reason IS NULL))
);
-- Pending messages (what the relay and `queue claim` take), oldest first.
CREATE INDEX IF NOT EXISTS queue_pending ON etlctl.queue (id)
    WHERE claimed_at IS NULL AND published_at IS NULL AND skipped_at IS NULL AND done_at IS NULL;

-- `etlctl run`'s heartbeat (migration 0008): one row per process (host, pid), its
-- start, its last pass and how many it made, its --max-sleep (doctor reports a
-- run not seen for twice that), and when it stopped on a signal.
CREATE TABLE IF NOT EXISTS etlctl.runners (
    id bigserial PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    last_pass_at timestamptz,
    passes bigint NOT NULL DEFAULT 0 CHECK (passes >= 0),
    max_sleep double precision NOT NULL CHECK (max_sleep > 0),
    stopped_at timestamptz,
    CONSTRAINT runners_host_pid_key UNIQUE (host, pid)
);

-- The kind of a job: named like the job, else like its integration's provider.
CREATE OR REPLACE FUNCTION etlctl.job_kind(job_name text, provider text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT k.name FROM etlctl.job_kinds k
    WHERE k.name IN (lower(job_name), lower(provider))
    ORDER BY k.name = lower(job_name) DESC
    LIMIT 1
$$;

-- Every phase of every step set to idle; order, display names and unknown keys kept.
-- A steps value that is not an object is returned unchanged (never repaired).
CREATE OR REPLACE FUNCTION etlctl.idle_steps(steps jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(steps) = 'object' THEN
        coalesce((
            SELECT jsonb_object_agg(key, CASE WHEN jsonb_typeof(value) = 'object'
                THEN value || '{"extraction": "idle", "transform": "idle", "embedding": "idle"}'
                ELSE value END)
            FROM jsonb_each(steps)), '{}')
    ELSE steps END
$$;

-- The steps of a new run: the kind's steps (with their order and display name
-- unless the document has its own) plus any others already in the document,
-- every phase idle.
CREATE OR REPLACE FUNCTION etlctl.run_steps(steps jsonb, kind text) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT etlctl.idle_steps(
        CASE WHEN jsonb_typeof(steps) = 'object' THEN steps ELSE '{}' END
        || coalesce((
            SELECT jsonb_object_agg(s.step,
                jsonb_build_object('order', s.position, 'display_name', s.display_name)
                || CASE WHEN jsonb_typeof(steps -> s.step) = 'object' THEN steps -> s.step ELSE '{}' END)
            FROM etlctl.kind_steps s WHERE s.kind = run_steps.kind), '{}'))
$$;

-- A time from a status document, or NULL when the text is not one (documents
-- written by other programs may hold anything; reading them must not fail).
CREATE OR REPLACE FUNCTION etlctl.try_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;

CREATE UNIQUE INDEX IF NOT EXISTS etlctl_one_running_per_integration
    ON etl_jobs (integration_id)
    WHERE (status ->> 'overall') = 'RUNNING';

-- Due jobs, earliest first: a range scan finds the few due among many. The
-- expression is the due rule, the time from which a job is due in the naive zone
-- of the table (NULL: its state never makes it due):
--   READY, RATE_LIMIT_REACHED (or RATE_LIMITED)  next_run (NULL: due now)
--   FAILED   retry_interval_minutes after the run's latest start, finish or update
-- Written out with built-in functions only: everything on etl_jobs runs with the
-- privileges of whoever writes a row, and the existing system's roles may not
-- execute etlctl's functions. The scheduler's queries use the very same
-- expression (the `_due_at` fragment of sql/queries/schedule.sql), so the
-- planner uses this index: change both together (a test compares them).
CREATE INDEX IF NOT EXISTS etlctl_jobs_due ON etl_jobs ((
    CASE status ->> 'overall'
        WHEN 'READY' THEN coalesce(next_run, '-infinity')
        WHEN 'RATE_LIMIT_REACHED' THEN coalesce(next_run, '-infinity')
        WHEN 'RATE_LIMITED' THEN coalesce(next_run, '-infinity')
        WHEN 'FAILED' THEN coalesce(greatest(last_run_started_at, last_run_finished_at, last_updated_at), '-infinity')
                           + make_interval(mins => greatest(coalesce(retry_interval_minutes, 0), 0))
    END
)) WHERE (status ->> 'overall') IN ('READY', 'FAILED', 'RATE_LIMIT_REACHED', 'RATE_LIMITED');

-- Jobs in flight (RUNNING, or FINISHED and not yet reset), by integration: what
-- keeps an integration busy, and what the sweep walks.
CREATE INDEX IF NOT EXISTS etlctl_jobs_in_flight ON etl_jobs (integration_id, id)
    WHERE (status ->> 'overall') IN ('RUNNING', 'FINISHED');

-- True when a step's three phases all hold `value`.
CREATE OR REPLACE FUNCTION etlctl.phases_are(step jsonb, value text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(step ->> 'extraction' = value AND step ->> 'transform' = value
                    AND step ->> 'embedding' = value, false)
$$;

-- The step a new run starts with: the kind's first step; for a job of unknown
-- kind, the first step of its document by its "order" key, then name.
CREATE OR REPLACE FUNCTION etlctl.first_step(steps jsonb, kind text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN kind IS NOT NULL THEN
        (SELECT s.step FROM etlctl.kind_steps s WHERE s.kind = first_step.kind ORDER BY s.position LIMIT 1)
    WHEN jsonb_typeof(steps) = 'object' THEN
        (SELECT e.key FROM jsonb_each(steps) e
         ORDER BY CASE WHEN jsonb_typeof(e.value -> 'order') = 'number' THEN (e.value -> 'order')::numeric END
                  NULLS LAST, e.key
         LIMIT 1)
    END
$$;

-- Statistics on a job's state and due time over the whole table (the planner ignores
-- those of the partial index above): they tell it how few jobs are due, so that
-- schedule-next looks up only the integrations of the due jobs (migration 0004).
-- The same built-in expression as the index (migration 0005).
CREATE STATISTICS IF NOT EXISTS etlctl.etl_jobs_due_stats ON
    (status ->> 'overall'),
    (CASE status ->> 'overall'
        WHEN 'READY' THEN coalesce(next_run, '-infinity')
        WHEN 'RATE_LIMIT_REACHED' THEN coalesce(next_run, '-infinity')
        WHEN 'RATE_LIMITED' THEN coalesce(next_run, '-infinity')
        WHEN 'FAILED' THEN coalesce(greatest(last_run_started_at, last_run_finished_at, last_updated_at), '-infinity')
                           + make_interval(mins => greatest(coalesce(retry_interval_minutes, 0), 0))
    END)
FROM etl_jobs;

-- A status document as etlctl reads it (migration 0007): whole when it is at most 1 MB long and
-- nested at most 64 levels; otherwise part by part, leaving out (as null) what is nested too deep
-- or, in a document over 1 MB, longer than 64 KB, and listing it in `unread`.
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
