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
-- (case-insensitively; kind names are stored lower-case).
CREATE TABLE IF NOT EXISTS etlctl.job_kinds (
    name text PRIMARY KEY CHECK (name = lower(name) AND name <> ''),
    description text NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS etlctl.kind_steps (
    kind text NOT NULL REFERENCES etlctl.job_kinds (name) ON UPDATE CASCADE ON DELETE CASCADE,
    position integer NOT NULL CHECK (position > 0),
    step text NOT NULL CHECK (step <> ''),
    display_name text NOT NULL DEFAULT '',
    -- 'finished': all three phases must finish; 'finished_or_idle': or all three may stay idle.
    rule text NOT NULL DEFAULT 'finished' CHECK (rule IN ('finished', 'finished_or_idle')),
    PRIMARY KEY (kind, step),
    -- Deferrable so that an operator can swap two positions in one transaction.
    CONSTRAINT kind_steps_kind_position_key UNIQUE (kind, position) DEFERRABLE INITIALLY IMMEDIATE
);

INSERT INTO etlctl.job_kinds (name, description) VALUES
    ('jira', 'Jira: all four steps must finish'),
    ('github', 'GitHub: repositories must finish; PRs may stay idle when none were extracted')
ON CONFLICT (name) DO NOTHING;

-- A kind's steps are seeded only while it has none: steps an operator removed stay removed.
INSERT INTO etlctl.kind_steps (kind, position, step, display_name, rule)
SELECT v.kind, v.position, v.step, v.display_name, v.rule
FROM (VALUES
    ('jira', 1, 'jira_projects_and_issue_types', 'Projects & Issue Types', 'finished'),
    ('jira', 2, 'jira_statuses_and_relationships', 'Statuses & Relationships', 'finished'),
    ('jira', 3, 'jira_issues_with_changelogs', 'Issues & Changelogs', 'finished'),
    ('jira', 4, 'jira_dev_status', 'Dev Status', 'finished'),
    ('github', 1, 'github_repositories', 'Repositories', 'finished'),
    ('github', 2, 'github_prs_commits_reviews_comments', 'PRs, Commits, Reviews & Comments', 'finished_or_idle')
) AS v (kind, position, step, display_name, rule)
WHERE NOT EXISTS (SELECT 1 FROM etlctl.kind_steps s WHERE s.kind = v.kind);

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
    db_user text NOT NULL DEFAULT current_user,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_job_id_at ON etlctl.audit (job_id, at);

-- The transactional outbox: extraction messages for the workers, written in the
-- same transaction that starts a run. A relay (or `etlctl queue claim`) takes
-- them in id order; (token, step, phase) makes queueing idempotent.
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
    CONSTRAINT queue_token_step_phase_key UNIQUE (token, step, phase)
);
CREATE INDEX IF NOT EXISTS queue_unclaimed ON etlctl.queue (phase, id) WHERE claimed_at IS NULL;

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

-- The time from which a job is due, in the naive zone of the table, or NULL when
-- its state never makes it due (RUNNING, FINISHED, or an unknown value):
--   READY, RATE_LIMIT_REACHED  next_run (NULL: due now)
--   FAILED                     retry_interval_minutes after the run's latest
--                              start, finish or update
-- IMMUTABLE (it reads only its arguments) so that an index can hold it.
CREATE OR REPLACE FUNCTION etlctl.due_at(
    overall text, next_run timestamp, started timestamp, finished timestamp, updated timestamp, retry_minutes integer
) RETURNS timestamp
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE overall
        WHEN 'READY' THEN coalesce(next_run, '-infinity')
        WHEN 'RATE_LIMIT_REACHED' THEN coalesce(next_run, '-infinity')
        WHEN 'FAILED' THEN coalesce(greatest(started, finished, updated), '-infinity')
                           + make_interval(mins => greatest(coalesce(retry_minutes, 0), 0))
    END
$$;

-- Due jobs, earliest first: a range scan finds the few due among many.
CREATE INDEX IF NOT EXISTS etlctl_jobs_due ON etl_jobs (
    etlctl.due_at(status ->> 'overall', next_run, last_run_started_at, last_run_finished_at,
                  last_updated_at, retry_interval_minutes)
) WHERE (status ->> 'overall') IN ('READY', 'FAILED', 'RATE_LIMIT_REACHED');

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
CREATE STATISTICS IF NOT EXISTS etlctl.etl_jobs_due_stats ON
    (status ->> 'overall'),
    (etlctl.due_at(status ->> 'overall', next_run, last_run_started_at, last_run_finished_at,
                   last_updated_at, retry_interval_minutes))
FROM etl_jobs;
