-- On-call tooling: doctor, why, history, watch and metrics. Read-only: none of
-- these queries changes a row. Naive timestamp columns are cast to timestamptz,
-- which reads them in the session TimeZone (the configured --db-timezone).
-- %(job_ids)s is an int[] or NULL (every job); %(tenant_ids)s, the tenants
-- of --tenant (store.jobs.tenant_ids), an int[] or NULL (every tenant).

-- name: oncall_jobs
-- Every job, or those in %(job_ids)s, in id order (see job_row).
-- include: job_row
WHERE %(job_ids)s::int[] IS NULL OR j.id = ANY (%(job_ids)s::int[])
ORDER BY j.id;

-- name: oncall_phase_changes
-- The latest audited change (`etlctl step`) of each step phase of these jobs'
-- current runs: who set it, and when. Workers that write the table directly
-- leave no audit row; callers fall back to the job's last_updated_at.
SELECT DISTINCT ON (a.job_id, a.details ->> 'step', a.details ->> 'phase')
       a.job_id, a.details ->> 'step' AS step, a.details ->> 'phase' AS phase, a.details ->> 'to' AS value,
       a.at, a.command, a.host, a.db_user
FROM etlctl.audit a
JOIN etl_jobs j ON j.id = a.job_id
WHERE a.job_id = ANY (%(job_ids)s::int[])
  AND a.details ? 'step' AND a.details ? 'phase'
  AND a.token IS NOT DISTINCT FROM (j.status ->> 'token')
ORDER BY a.job_id, a.details ->> 'step', a.details ->> 'phase', a.at DESC, a.id DESC;

-- name: oncall_run_history
-- How long each of these jobs' last 20 completed runs took, from the audit:
-- a run starts where an audit row moves its token to RUNNING and ends where
-- one moves it from RUNNING to FINISHED. (last_run_started_at/finished_at
-- cannot say it: a new run overwrites the start.)
WITH starts AS (
    SELECT job_id, token, max(at) AS started
    FROM etlctl.audit
    WHERE job_id = ANY (%(job_ids)s::int[]) AND token IS NOT NULL
      AND to_state = 'RUNNING' AND from_state IS DISTINCT FROM 'RUNNING'
    GROUP BY job_id, token
),
finishes AS (
    SELECT job_id, token, min(at) AS finished
    FROM etlctl.audit
    WHERE job_id = ANY (%(job_ids)s::int[]) AND token IS NOT NULL
      AND from_state = 'RUNNING' AND to_state = 'FINISHED'
    GROUP BY job_id, token
),
runs AS (
    SELECT s.job_id, extract(epoch FROM f.finished - s.started)::float8 AS seconds,
           row_number() OVER (PARTITION BY s.job_id ORDER BY f.finished DESC) AS n
    FROM starts s
    JOIN finishes f ON f.job_id = s.job_id AND f.token = s.token
    WHERE f.finished >= s.started
)
SELECT job_id, count(*) AS runs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS median_seconds,
       max(seconds) AS max_seconds
FROM runs
WHERE n <= 20
GROUP BY job_id
ORDER BY job_id;

-- name: oncall_index
-- The partial unique index that allows one RUNNING job per integration: present, and valid.
SELECT c.oid IS NOT NULL AS present, coalesce(x.indisvalid, false) AS valid
FROM (SELECT to_regclass('etlctl_one_running_per_integration') AS oid) c
LEFT JOIN pg_index x ON x.indexrelid = c.oid;

-- name: oncall_clock
-- The database server's wall clock at this instant (not the transaction's now()),
-- for the clock skew check.
SELECT clock_timestamp() AS db_clock;

-- name: oncall_queue_stale
-- Messages still waiting %(older_than)s seconds after they were queued (pending,
-- or claimed and not done: not those a relay published or skipped), oldest
-- first, with whether each still belongs to its job's current run and its
-- publish attempts.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now)
SELECT q.id, q.job_id, q.step, q.phase, q.token, q.created_at, q.claimed_at, q.claimed_by,
       q.queue_name, q.attempts, q.last_error, q.last_attempt_at,
       j.id IS NOT NULL AS job_exists,
       (j.status ->> 'token') IS NOT DISTINCT FROM q.token AS current_run,
       count(*) OVER () AS total,
       clock.now
FROM etlctl.queue q
CROSS JOIN clock
LEFT JOIN etl_jobs j ON j.id = q.job_id
WHERE q.done_at IS NULL AND q.published_at IS NULL AND q.skipped_at IS NULL
  AND q.created_at < clock.now - make_interval(secs => %(older_than)s)
  AND (%(tenant_ids)s::int[] IS NULL OR q.tenant_id = ANY (%(tenant_ids)s::int[]))
ORDER BY q.id
LIMIT 200;

-- name: oncall_target_queues
-- The broker queues etlctl publishes to, for doctor: those of the messages still
-- pending (with how many wait for each), and the extraction queue of every tier
-- that has an active job (the next run's message goes there); of %(tenant_ids)s
-- (an int[]) only, when given.
SELECT queue_name, sum(pending)::int AS pending
FROM (
    SELECT q.queue_name, 1 AS pending
    FROM etlctl.queue q
    WHERE q.claimed_at IS NULL AND q.published_at IS NULL AND q.skipped_at IS NULL AND q.done_at IS NULL
      AND q.queue_name IS NOT NULL
      AND (%(tenant_ids)s::int[] IS NULL OR q.tenant_id = ANY (%(tenant_ids)s::int[]))
    UNION ALL
    SELECT 'extraction_queue_' || coalesce(t.tier, 'premium'), 0
    FROM tenants t
    WHERE t.active AND EXISTS (SELECT 1 FROM etl_jobs j WHERE j.tenant_id = t.id AND j.active)
      AND (%(tenant_ids)s::int[] IS NULL OR t.id = ANY (%(tenant_ids)s::int[]))
) targets
GROUP BY queue_name
ORDER BY queue_name;

-- name: history
-- A job's audit rows, the newest %(limit)s of them (since %(since)s, an ISO
-- time, or %(since_seconds)s ago, when given), oldest first, with how many matched.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
bound AS (
    SELECT coalesce(%(since)s::timestamptz, clock.now - make_interval(secs => %(since_seconds)s)) AS since
    FROM clock
)
SELECT * FROM (
    SELECT a.id, a.at, a.job_id, a.tenant_id, a.from_state, a.to_state, a.token, a.command, a.host, a.pid,
           a.db_user, a.details, count(*) OVER () AS total
    FROM etlctl.audit a, bound
    WHERE a.job_id = %(job_id)s
      AND (bound.since IS NULL OR a.at >= bound.since)
    ORDER BY a.at DESC, a.id DESC
    LIMIT %(limit)s
) newest
ORDER BY at, id;

-- name: history_all
-- The newest %(limit)s audit rows of every job (of the tenants %(tenant_ids)s),
-- since %(since)s or %(since_seconds)s ago when given, oldest first, with how many matched.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
bound AS (
    SELECT coalesce(%(since)s::timestamptz, clock.now - make_interval(secs => %(since_seconds)s)) AS since
    FROM clock
)
SELECT * FROM (
    SELECT a.id, a.at, a.job_id, a.tenant_id, a.from_state, a.to_state, a.token, a.command, a.host, a.pid,
           a.db_user, a.details, count(*) OVER () AS total
    FROM etlctl.audit a, bound
    WHERE (%(tenant_ids)s::int[] IS NULL OR a.tenant_id = ANY (%(tenant_ids)s::int[]))
      AND (bound.since IS NULL OR a.at >= bound.since)
    ORDER BY a.at DESC, a.id DESC
    LIMIT %(limit)s
) newest
ORDER BY at, id;

-- name: job_exists
SELECT EXISTS (SELECT 1 FROM etl_jobs WHERE id = %(job_id)s) AS found;

-- name: watch_listen
-- Subscribe to the channel every etlctl state change notifies (and that the
-- existing system's UI listens to). Repeating it is harmless: watch also uses
-- it to find out whether the connection is still alive.
LISTEN etl_job_status;

-- name: metrics_job_counts
-- Jobs by tenant, kind and overall state; and per tenant, FINISHED jobs whose
-- reset is pending or gave up. Aggregated here, so that a million jobs never
-- reach Python. The kind is joined as etlctl.job_kind() finds it (by job name,
-- else by provider): a function call per job costs seconds at a million jobs.
SELECT coalesce(t.name, j.tenant_id::text) AS tenant,
       coalesce(kn.name, kp.name, 'unknown') AS kind,
       coalesce(CASE j.status ->> 'overall' WHEN 'RATE_LIMITED' THEN 'RATE_LIMIT_REACHED'
                ELSE j.status ->> 'overall' END, 'unknown') AS overall,
       count(*) AS jobs,
       count(*) FILTER (WHERE (j.status ->> 'reset_stage') = 'gave_up') AS gave_up
FROM etl_jobs j
LEFT JOIN tenants t ON t.id = j.tenant_id
LEFT JOIN integrations i ON i.id = j.integration_id
LEFT JOIN etlctl.job_kinds kn ON kn.name = lower(j.job_name)
LEFT JOIN etlctl.job_kinds kp ON kp.name = lower(i.provider)
WHERE %(tenant_ids)s::int[] IS NULL OR j.tenant_id = ANY (%(tenant_ids)s::int[])
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3;

-- name: metrics_last_success
-- Seconds since each job's last run finished (jobs that have one), in id order;
-- read through a server-side cursor, a batch at a time. A finish another program
-- wrote as 'infinity' (or '-infinity') is -Inf (+Inf) seconds ago: before
-- PostgreSQL 17, subtracting it fails, and one such row must not fail the rest.
SELECT j.id, j.job_name, coalesce(t.name, j.tenant_id::text) AS tenant,
       coalesce(kn.name, kp.name, 'unknown') AS kind,
       CASE WHEN isfinite(j.last_run_finished_at)
            THEN extract(epoch FROM coalesce(%(now)s::timestamptz, now()) - j.last_run_finished_at::timestamptz)::float8
            WHEN j.last_run_finished_at > 'epoch' THEN '-Infinity'::float8
            ELSE 'Infinity'::float8 END AS seconds
FROM etl_jobs j
LEFT JOIN tenants t ON t.id = j.tenant_id
LEFT JOIN integrations i ON i.id = j.integration_id
LEFT JOIN etlctl.job_kinds kn ON kn.name = lower(j.job_name)
LEFT JOIN etlctl.job_kinds kp ON kp.name = lower(i.provider)
WHERE j.last_run_finished_at IS NOT NULL
  AND (%(tenant_ids)s::int[] IS NULL OR j.tenant_id = ANY (%(tenant_ids)s::int[]))
ORDER BY j.id;

-- name: metrics_oldest_finished
-- The age of the oldest FINISHED job (finished, else last updated); NULL when there is none. Times
-- another program wrote as infinity are left out (before PostgreSQL 17, subtracting them fails).
SELECT max(extract(epoch FROM coalesce(%(now)s::timestamptz, now())
                   - coalesce(j.last_run_finished_at, j.last_updated_at)::timestamptz))::float8 AS seconds
FROM etl_jobs j
WHERE (j.status ->> 'overall') = 'FINISHED'
  AND (%(tenant_ids)s::int[] IS NULL OR j.tenant_id = ANY (%(tenant_ids)s::int[]))
  AND isfinite(coalesce(j.last_run_finished_at, j.last_updated_at));

-- name: metrics_queue
-- Messages still waiting (pending, or claimed by a worker and not done; not those
-- a relay published or skipped), by phase and whether a worker claimed them, with
-- the oldest one's age.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now)
SELECT q.phase, q.claimed_at IS NOT NULL AS claimed, count(*) AS messages,
       extract(epoch FROM clock.now - min(q.created_at))::float8 AS oldest_seconds
FROM etlctl.queue q
CROSS JOIN clock
WHERE q.done_at IS NULL AND q.published_at IS NULL AND q.skipped_at IS NULL
  AND (%(tenant_ids)s::int[] IS NULL OR q.tenant_id = ANY (%(tenant_ids)s::int[]))
GROUP BY q.phase, q.claimed_at IS NOT NULL, clock.now
ORDER BY q.phase, claimed;

-- name: metrics_relay
-- What the relays did, ever: messages published (confirmed by the broker) and
-- skipped (their run was over), and the broker's refusals (nacks and returns,
-- each retried). Counts over the whole outbox, which etlctl never deletes from.
SELECT count(*) FILTER (WHERE q.published_at IS NOT NULL) AS published,
       count(*) FILTER (WHERE q.skipped_at IS NOT NULL) AS skipped,
       coalesce(sum(q.refusals), 0)::bigint AS refusals
FROM etlctl.queue q
WHERE %(tenant_ids)s::int[] IS NULL OR q.tenant_id = ANY (%(tenant_ids)s::int[]);

-- name: doctor_candidates
-- The jobs that can have a doctor finding: a superset, decided here so that
-- doctor reads a few rows of a big database instead of all of them; the checks
-- in etlctl/doctor.py then decide on these alone. Keep the two in step (a test
-- compares doctor's findings with and without this filter on random jobs):
--   FINISHED                       stuck, timer retrying
--   RUNNING                        longer than %(long_run_floor)s s, or beside another RUNNING job
--   FAILED                         waiting for its retry (a note), or overdue
--   READY, RATE_LIMIT_REACHED      due for over %(overdue)s s; due but inactive; next_run beyond
--   (or RATE_LIMITED)              its interval + %(overdue)s s; nothing to queue: no kind, a kind
--                                  without a message or without steps
--   any state                      a malformed document, a part etlctl does not read, a token or
--                                  reset key out of its type or range, or an unknown overall
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
conflicts AS (
    SELECT integration_id FROM etl_jobs
    WHERE (status ->> 'overall') = 'RUNNING' AND integration_id IS NOT NULL
    GROUP BY integration_id HAVING count(*) > 1
),
unstartable AS (
    SELECT k.name FROM etlctl.job_kinds k
    WHERE k.message_provider IS NULL
       OR NOT EXISTS (SELECT 1 FROM etlctl.kind_steps s WHERE s.kind = k.name)
)
SELECT j.id
FROM etl_jobs j
CROSS JOIN clock
LEFT JOIN tenants t ON t.id = j.tenant_id
LEFT JOIN integrations i ON i.id = j.integration_id
-- The kind as etlctl.job_kind() finds it (by job name, else by provider), joined
-- rather than called: a function call per job costs seconds at a million jobs.
LEFT JOIN etlctl.job_kinds kn ON kn.name = lower(j.job_name)
LEFT JOIN etlctl.job_kinds kp ON kp.name = lower(i.provider)
CROSS JOIN LATERAL (
    SELECT
-- include: _due_at
               AS due_at,
           CASE WHEN jsonb_typeof(j.status -> 'steps') = 'object' THEN j.status -> 'steps' ELSE '{}' END AS steps
) d
WHERE (%(tenant_ids)s::int[] IS NULL OR j.tenant_id = ANY (%(tenant_ids)s::int[]))
  AND (
       -- %(malformed_only)s: the malformed jobs alone (metrics), not the ones a state makes candidates.
       (NOT %(malformed_only)s AND (
       (j.status ->> 'overall') IN ('FINISHED', 'FAILED')
     OR (j.status ->> 'overall') IS NULL
     OR (j.status ->> 'overall') NOT IN ('READY', 'RUNNING', 'FINISHED', 'FAILED', 'RATE_LIMIT_REACHED', 'RATE_LIMITED')
     OR ((j.status ->> 'overall') = 'RUNNING'
         AND (j.last_run_started_at IS NULL
              OR j.last_run_started_at < (clock.now - make_interval(secs => %(long_run_floor)s))::timestamp
              OR j.integration_id IN (SELECT integration_id FROM conflicts)))
     OR ((j.status ->> 'overall') IN ('READY', 'RATE_LIMIT_REACHED', 'RATE_LIMITED')
         AND (d.due_at <= (clock.now - make_interval(secs => %(overdue)s))::timestamp
              OR (d.due_at <= clock.now::timestamp
                  AND (j.active IS NOT TRUE OR t.active IS NOT TRUE
                       OR (j.integration_id IS NOT NULL AND i.active IS NOT TRUE)))
              OR d.due_at > (clock.now + make_interval(mins => greatest(coalesce(j.schedule_interval_minutes, 0), 0))
                             + make_interval(secs => %(overdue)s))::timestamp
              -- never started: no kind, or a kind without a message or without steps
              OR coalesce(kn.name, kp.name) IS NULL
              OR coalesce(kn.name, kp.name) IN (SELECT name FROM unstartable)))
       ))
     -- Malformed: not an object, no steps object, a step that is not an object or a phase value not known.
     OR jsonb_typeof(j.status) IS DISTINCT FROM 'object'
     OR jsonb_typeof(j.status -> 'steps') IS DISTINCT FROM 'object'
     OR EXISTS (SELECT 1 FROM jsonb_each(d.steps) e
                WHERE jsonb_typeof(e.value) IS DISTINCT FROM 'object'
                   OR coalesce(e.value ->> 'extraction', '') NOT IN ('idle', 'running', 'finished', 'failed')
                   OR coalesce(e.value ->> 'transform', '') NOT IN ('idle', 'running', 'finished', 'failed')
                   OR coalesce(e.value ->> 'embedding', '') NOT IN ('idle', 'running', 'finished', 'failed'))
     -- Parts of the document etlctl does not read (etlctl.readable_status's first test: longer
     -- than %(max_bytes)s bytes, or nested deeper than %(max_depth)s levels).
     OR octet_length(j.status::text) > %(max_bytes)s
     OR jsonb_path_exists(j.status, format('strict $.**{%%s}', %(max_depth)s::int)::jsonpath)
     -- Keys etlctl checks on read (etlctl.core.lifecycle.reset_state) out of their type or range:
     -- run tokens that are no text of at most %(max_token)s characters...
     OR coalesce(jsonb_typeof(j.status -> 'token'), 'null') NOT IN ('null', 'string')
     OR length(j.status ->> 'token') > %(max_token)s
     OR coalesce(jsonb_typeof(j.status -> 'reset_token'), 'null') NOT IN ('null', 'string')
     OR length(j.status ->> 'reset_token') > %(max_token)s
     -- ...and reset keys that cannot be read: a stage etlctl does not write, an attempt that is no
     -- count up to %(max_attempt)s, a time that is no ISO time with an offset, a deadline further
     -- ahead than the longest wait of the flow (%(max_wait)s seconds).
     OR (coalesce(jsonb_typeof(j.status -> 'reset_stage'), 'null') <> 'null'
         AND coalesce(j.status ->> 'reset_stage', '') NOT IN ('check', 'cooldown', 'gave_up'))
     OR (coalesce(jsonb_typeof(j.status -> 'reset_attempt'), 'null') <> 'null'
         AND (jsonb_typeof(j.status -> 'reset_attempt') <> 'number'
              OR (j.status ->> 'reset_attempt') !~ '^[0-9]{1,9}$'
              OR CASE WHEN (j.status ->> 'reset_attempt') ~ '^[0-9]{1,9}$'
                      THEN (j.status ->> 'reset_attempt')::int > %(max_attempt)s END))
     OR (coalesce(jsonb_typeof(j.status -> 'reset_deadline'), 'null') <> 'null'
         AND (jsonb_typeof(j.status -> 'reset_deadline') <> 'string'
              OR etlctl.try_timestamptz(j.status ->> 'reset_deadline') IS NULL
              OR (j.status ->> 'reset_deadline') !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$'
              OR etlctl.try_timestamptz(j.status ->> 'reset_deadline') > clock.now + make_interval(secs => %(max_wait)s)))
     OR (coalesce(jsonb_typeof(j.status -> 'reset_gave_up_at'), 'null') <> 'null'
         AND (jsonb_typeof(j.status -> 'reset_gave_up_at') <> 'string'
              OR etlctl.try_timestamptz(j.status ->> 'reset_gave_up_at') IS NULL
              OR (j.status ->> 'reset_gave_up_at') !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$')))
ORDER BY j.id;

-- name: doctor_job_count
SELECT count(*) AS jobs, coalesce(%(now)s::timestamptz, now()) AS now FROM etl_jobs j
WHERE %(tenant_ids)s::int[] IS NULL OR j.tenant_id = ANY (%(tenant_ids)s::int[]);

-- name: tenant_job_ids
-- The ids of the jobs of the tenants %(tenant_ids)s (an int[]), in id order.
SELECT j.id FROM etl_jobs j WHERE j.tenant_id = ANY (%(tenant_ids)s::int[]) ORDER BY j.id;

-- name: watch_in_flight
-- The jobs that are RUNNING or FINISHED (see job_row): what `watch` without JOBs
-- remembers at start. Every other job's next change is a start, which the audit tells.
-- include: job_row
WHERE (j.status ->> 'overall') IN ('RUNNING', 'FINISHED')
  AND (%(tenant_ids)s::int[] IS NULL OR j.tenant_id = ANY (%(tenant_ids)s::int[]))
ORDER BY j.id;

-- name: watch_digests
-- A cheap fingerprint of the jobs `watch` looks at, polled every second: the jobs
-- in %(job_ids)s (an int[]), plus, with %(in_flight)s, every job RUNNING or
-- FINISHED (the index etlctl_jobs_in_flight finds them). A digest that changed is
-- a write to re-read, whoever made it: the existing workers send no NOTIFY.
SELECT j.id, md5(j.status::text) AS digest
FROM etl_jobs j
WHERE j.id = ANY (%(job_ids)s::int[])
   OR (%(in_flight)s AND (j.status ->> 'overall') IN ('RUNNING', 'FINISHED')
       AND (%(tenant_ids)s::int[] IS NULL OR j.tenant_id = ANY (%(tenant_ids)s::int[])));

-- name: watch_audit_mark
-- The newest audit row: everything etlctl changes after it has a higher id.
SELECT coalesce(max(id), 0) AS mark FROM etlctl.audit;

-- name: watch_changed_since
-- The jobs etlctl changed after audit row %(mark)s (while watch was disconnected).
SELECT DISTINCT job_id FROM etlctl.audit
WHERE id > %(mark)s AND (%(tenant_ids)s::int[] IS NULL OR tenant_id = ANY (%(tenant_ids)s::int[]))
ORDER BY job_id;

-- name: watch_last_transition
-- Each of these jobs' latest audited change of overall state.
SELECT DISTINCT ON (job_id) job_id, from_state, to_state
FROM etlctl.audit
WHERE job_id = ANY (%(job_ids)s::int[]) AND from_state IS DISTINCT FROM to_state
ORDER BY job_id, id DESC;

-- Fixes that doctor prints for a person to run with psql (no etlctl command does
-- these: they change what etlctl must never change on its own). doctor fills in
-- the ids; they are never run by etlctl.

-- name: fix_activate_job
UPDATE etl_jobs SET active = true WHERE id = %(id)s;

-- name: fix_activate_integration
UPDATE integrations SET active = true WHERE id = %(id)s;

-- name: fix_activate_tenant
UPDATE tenants SET active = true WHERE id = %(id)s;

-- name: fix_clear_next_run
UPDATE etl_jobs SET next_run = NULL WHERE id = %(id)s;

-- name: fix_drop_running_index
DROP INDEX etlctl_one_running_per_integration;

-- name: fix_create_running_index
CREATE UNIQUE INDEX etlctl_one_running_per_integration ON etl_jobs (integration_id) WHERE (status ->> 'overall') = 'RUNNING';

-- name: fix_forget_run
UPDATE etlctl.runners SET stopped_at = now() WHERE id = %(id)s AND stopped_at IS NULL;
