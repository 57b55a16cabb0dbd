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
    db_user text NOT NULL DEFAULT current_user,
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
