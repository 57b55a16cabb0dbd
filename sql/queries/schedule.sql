-- schedule-next: one tick starts, per idle integration, its due job.
--
-- A tick is: claim (lock the integrations that have a due job and no job in
-- flight, skipping those another scheduler holds), then start (with a fresh
-- snapshot taken after the locks), both in one transaction, then chain.
-- Starting a job on an integration needs that integration's lock, so no two
-- etlctl schedulers can race on one integration; the partial unique index on
-- RUNNING jobs is the backstop against any other writer.
--
-- Due rule: the `_due_at` expression below; a job is due when it is <= now and
-- the job, its tenant and (if it has one) its integration are active. A job
-- without an integration is its own group: nothing else keeps it busy. A job
-- whose kind defines no message (etlctl.job_kinds.message_provider) is never
-- started: no worker would accept its run.

-- name: _due_at
-- The time from which job j is due, in the naive zone of the table (NULL: its
-- state never makes it due). A fragment, included by the queries below: the very
-- expression of the index etlctl_jobs_due and of the statistics
-- etlctl.etl_jobs_due_stats (sql/schema.sql), so that the planner uses them.
-- Change all three together; tests/test_due_index.py checks that they match.
CASE j.status ->> 'overall'
        WHEN 'READY' THEN coalesce(j.next_run, '-infinity')
        WHEN 'RATE_LIMIT_REACHED' THEN coalesce(j.next_run, '-infinity')
        WHEN 'RATE_LIMITED' THEN coalesce(j.next_run, '-infinity')
        WHEN 'FAILED' THEN coalesce(greatest(j.last_run_started_at, j.last_run_finished_at, j.last_updated_at), '-infinity')
                           + make_interval(mins => greatest(coalesce(j.retry_interval_minutes, 0), 0))
    END


-- name: schedule_claim
-- Lock integrations that have a due job and nothing in flight, earliest due first.
SELECT i.id AS integration_id
FROM integrations i
JOIN (
    SELECT j.integration_id, min(
-- include: _due_at
           ) AS first_due
    FROM etl_jobs j
    JOIN tenants t ON t.id = j.tenant_id
    WHERE (j.status ->> 'overall') IN ('READY', 'FAILED', 'RATE_LIMIT_REACHED', 'RATE_LIMITED')
      AND
-- include: _due_at
          <= coalesce(%(now)s::timestamptz, now())::timestamp
      AND j.active AND t.active AND j.integration_id IS NOT NULL
      AND (%(tenant)s::text IS NULL OR j.tenant_id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s))
    GROUP BY j.integration_id
) due ON due.integration_id = i.id
WHERE i.active
  AND NOT EXISTS (SELECT 1 FROM etl_jobs o WHERE o.integration_id = i.id
                  AND (o.status ->> 'overall') IN ('RUNNING', 'FINISHED'))
ORDER BY due.first_due, i.id
LIMIT %(limit)s
FOR NO KEY UPDATE OF i SKIP LOCKED;

-- name: schedule_start
-- Start, per claimed integration (and per due job without one), the earliest due
-- job: RUNNING with a new token and idle phases, its first extraction queued,
-- audited and notified, all in this one statement. The message is the one the
-- existing run-now path publishes (existing-system-contract.md §2), built from
-- the kind's data: its message_extra, then tenant_id, integration_id, job_id,
-- type (the first step), provider, token and old_last_sync_date (the stored
-- naive last_sync_date as YYYY-MM-DD HH:MM:SS, or null).
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
candidates AS (
    SELECT DISTINCT ON (coalesce(j.integration_id, -j.id))
           j.id, j.tenant_id, j.integration_id, i.provider, j.status ->> 'overall' AS from_state,
           k.kind, first.step AS first_step, kd.message_provider, kd.message_extra,
           'extraction_queue_' || t.tier AS queue_name,
-- include: _due_at
               AS due
    FROM etl_jobs j
    JOIN tenants t ON t.id = j.tenant_id
    LEFT JOIN integrations i ON i.id = j.integration_id
    CROSS JOIN clock
    CROSS JOIN LATERAL (SELECT etlctl.job_kind(j.job_name, i.provider) AS kind) k
    JOIN etlctl.job_kinds kd ON kd.name = k.kind
    CROSS JOIN LATERAL (SELECT etlctl.first_step(j.status -> 'steps', k.kind) AS step) first
    WHERE (j.status ->> 'overall') IN ('READY', 'FAILED', 'RATE_LIMIT_REACHED', 'RATE_LIMITED')
      AND
-- include: _due_at
          <= clock.now::timestamp
      AND j.active AND t.active
      AND (j.integration_id = ANY (%(integrations)s::int[])
           OR (j.integration_id IS NULL AND %(unbound)s))
      AND (%(tenant)s::text IS NULL OR j.tenant_id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s))
      AND (j.integration_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM etl_jobs o WHERE o.integration_id = j.integration_id
            AND (o.status ->> 'overall') IN ('RUNNING', 'FINISHED')))
      AND kd.message_provider IS NOT NULL
      AND first.step IS NOT NULL
    ORDER BY coalesce(j.integration_id, -j.id), due, j.id
),
chosen AS (
    SELECT * FROM candidates ORDER BY due, id LIMIT %(limit)s
),
-- A job row another session holds locked is left for the next tick rather than
-- waited for: one stuck transaction must not stall every integration.
lockable AS (
    SELECT j.id FROM etl_jobs j WHERE j.id IN (SELECT id FROM chosen)
    ORDER BY j.id
    FOR NO KEY UPDATE SKIP LOCKED
),
started AS (
    -- As the existing run-now path: error_message cleared, reset_deadline null,
    -- reset_attempt 0; unlike it, every phase idle and the kind's steps added.
    UPDATE etl_jobs j SET
        status = j.status || jsonb_build_object(
            'overall', 'RUNNING', 'token', gen_random_uuid()::text,
            'steps', etlctl.run_steps(j.status -> 'steps', c.kind),
            'reset_stage', NULL, 'reset_deadline', NULL, 'reset_attempt', 0, 'reset_gave_up_at', NULL,
            'reset_token', NULL),
        last_run_started_at = clock.now::timestamp,
        error_message = NULL,
        retry_count = CASE WHEN c.from_state = 'FAILED' THEN coalesce(j.retry_count, 0) + 1 ELSE j.retry_count END,
        last_updated_at = clock.now::timestamp
    FROM chosen c, clock
    -- Guard on the newest row version: still in the state, and still due.
    WHERE j.id = c.id
      AND c.id IN (SELECT id FROM lockable)
      AND (j.status ->> 'overall') = c.from_state
      AND
-- include: _due_at
          <= clock.now::timestamp
    RETURNING j.id, j.job_name, j.tenant_id, j.integration_id, c.provider, c.from_state,
              j.status ->> 'token' AS token, c.first_step, j.retry_count,
              c.message_provider, c.message_extra, c.queue_name,
              to_char(j.last_sync_date, 'YYYY-MM-DD HH24:MI:SS') AS old_last_sync_date
),
queued AS (
    INSERT INTO etlctl.queue (created_at, job_id, tenant_id, integration_id, token, step, phase, queue_name, message)
    SELECT clock.now, s.id, s.tenant_id, s.integration_id, s.token, s.first_step, 'extraction', s.queue_name,
           s.message_extra || jsonb_build_object(
               'tenant_id', s.tenant_id, 'integration_id', s.integration_id, 'job_id', s.id,
               'type', s.first_step, 'provider', s.message_provider, 'token', s.token,
               'old_last_sync_date', s.old_last_sync_date)
    FROM started s, clock
    RETURNING id, job_id
),
audit AS (
    INSERT INTO etlctl.audit (at, job_id, tenant_id, from_state, to_state, token, command, host, pid, details)
    SELECT clock.now, s.id, s.tenant_id, s.from_state, 'RUNNING', s.token,
           %(actor_command)s, %(actor_host)s, %(actor_pid)s,
           jsonb_build_object('first_step', s.first_step, 'retry_count', s.retry_count, 'integration_id', s.integration_id)
    FROM started s, clock
    RETURNING 1
),
notified AS (
    SELECT pg_notify('etl_job_status', json_build_object('job_id', s.id, 'tenant_id', s.tenant_id, 'overall', 'RUNNING')::text)
    FROM started s
),
-- Wakes `etlctl relay --follow` (sql/queries/relay.sql) at the commit: the newest message queued.
relay_woken AS (
    SELECT pg_notify('etlctl_queue', max(q.id)::text) FROM queued q HAVING count(*) > 0
),
-- Each started job's queue message, through a map from job id to message id: a join of
-- the two CTEs would be planned as a nested loop over rows the planner cannot count,
-- 1,000 x 1,000 comparisons for a tick that starts 1,000 jobs (see BENCHMARKS.md).
queue_ids AS MATERIALIZED (
    SELECT jsonb_object_agg(q.job_id, q.id) AS by_job FROM queued q
)
SELECT s.id, s.job_name, s.tenant_id, s.integration_id, s.provider, s.from_state, s.token, s.first_step,
       s.retry_count, s.queue_name, (queue_ids.by_job ->> s.id::text)::bigint AS queue_id,
       (SELECT count(*) FROM audit) AS audited, (SELECT count(*) FROM notified) AS notified,
       (SELECT count(*) FROM relay_woken) AS relay_woken
FROM started s
CROSS JOIN queue_ids
ORDER BY s.id;

-- name: schedule_chain
-- For RUNNING jobs of a kind that defines a message, whose steps so far are
-- finished and whose next step is still idle and marked `chain`
-- (etlctl.kind_steps.chain: off for the seeded kinds, whose workers chain their
-- own steps), queue that step's extraction, unless something touched the job in
-- the last %(grace)s seconds. Idempotent on (token, step, phase). Notifies
-- etlctl_queue when it queued anything.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
running AS (
    SELECT j.id, j.tenant_id, j.integration_id, j.status ->> 'token' AS token,
           j.status -> 'steps' AS steps, k.kind, kd.message_provider, kd.message_extra,
           'extraction_queue_' || t.tier AS queue_name,
           to_char(j.last_sync_date, 'YYYY-MM-DD HH24:MI:SS') AS old_last_sync_date
    FROM etl_jobs j
    JOIN tenants t ON t.id = j.tenant_id
    LEFT JOIN integrations i ON i.id = j.integration_id
    CROSS JOIN clock
    CROSS JOIN LATERAL (SELECT etlctl.job_kind(j.job_name, i.provider) AS kind) k
    JOIN etlctl.job_kinds kd ON kd.name = k.kind
    WHERE (j.status ->> 'overall') = 'RUNNING'
      AND kd.message_provider IS NOT NULL
      AND EXISTS (SELECT 1 FROM etlctl.kind_steps c WHERE c.kind = k.kind AND c.chain)
      AND j.status ->> 'token' IS NOT NULL
      AND jsonb_typeof(j.status -> 'steps') = 'object'
      AND coalesce(j.last_updated_at, '-infinity') <= (clock.now - make_interval(secs => %(grace)s))::timestamp
      AND (%(tenant)s::text IS NULL OR j.tenant_id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s))
),
next_step AS (
    SELECT r.*, n.step
    FROM running r
    CROSS JOIN LATERAL (
        SELECT s.step, s.position, s.chain FROM etlctl.kind_steps s
        WHERE s.kind = r.kind AND NOT etlctl.phases_are(r.steps -> s.step, 'finished')
        ORDER BY s.position LIMIT 1
    ) n
    WHERE n.position > 1
      AND n.chain
      AND (r.steps -> n.step IS NULL OR etlctl.phases_are(r.steps -> n.step, 'idle'))
),
queued AS (
    INSERT INTO etlctl.queue (created_at, job_id, tenant_id, integration_id, token, step, phase, queue_name, message)
    SELECT clock.now, n.id, n.tenant_id, n.integration_id, n.token, n.step, 'extraction', n.queue_name,
           n.message_extra || jsonb_build_object(
               'tenant_id', n.tenant_id, 'integration_id', n.integration_id, 'job_id', n.id,
               'type', n.step, 'provider', n.message_provider, 'token', n.token,
               'old_last_sync_date', n.old_last_sync_date)
    FROM next_step n, clock
    ON CONFLICT (token, step, phase) DO NOTHING
    RETURNING id AS queue_id, job_id, step
),
-- Wakes `etlctl relay --follow` at the commit, as schedule_start does.
relay_woken AS (
    SELECT pg_notify('etlctl_queue', max(q.queue_id)::text) FROM queued q HAVING count(*) > 0
)
SELECT q.queue_id, q.job_id, q.step
FROM queued q
LEFT JOIN relay_woken ON true
ORDER BY q.queue_id;

-- name: schedule_plan
-- Every job (or those in %(job_ids)s, an int[]; or one tenant's) with the facts
-- that decide whether a tick starts it, for `schedule-next --explain`, `why` and
-- `doctor` (etlctl.core.due explains them). At most %(limit)s rows (NULL: all).
SELECT j.id, j.job_name, j.tenant_id, t.name AS tenant_name, j.integration_id, i.provider,
       -- RATE_LIMITED, the existing workers' spelling, reads as RATE_LIMIT_REACHED.
       CASE j.status ->> 'overall' WHEN 'RATE_LIMITED' THEN 'RATE_LIMIT_REACHED' ELSE j.status ->> 'overall' END AS overall,
       k.kind, kd.message_provider,
       j.active, i.active AS integration_active, t.active AS tenant_active,
       -- NULL: due whenever (-infinity has no Python value); never-due states give NULL too,
       -- and etlctl.core.due looks at the state first.
       nullif(
-- include: _due_at
              , '-infinity')::timestamptz AS due_at,
       j.next_run::timestamptz AS next_run, j.schedule_interval_minutes, j.retry_interval_minutes,
       j.last_run_started_at::timestamptz AS last_run_started_at,
       etlctl.first_step(j.status -> 'steps', k.kind) AS first_step,
       busy.id AS busy_job_id, busy.overall AS busy_overall, busy.since AS busy_since,
       coalesce(%(now)s::timestamptz, now()) AS now
FROM etl_jobs j
LEFT JOIN tenants t ON t.id = j.tenant_id
LEFT JOIN integrations i ON i.id = j.integration_id
CROSS JOIN LATERAL (SELECT etlctl.job_kind(j.job_name, i.provider) AS kind) k
LEFT JOIN etlctl.job_kinds kd ON kd.name = k.kind
LEFT JOIN LATERAL (
    -- Since when it is in that state: started (RUNNING), or finished (FINISHED).
    SELECT o.id, o.status ->> 'overall' AS overall,
           CASE WHEN o.status ->> 'overall' = 'FINISHED'
                THEN coalesce(o.last_run_finished_at, o.last_updated_at)
                ELSE o.last_run_started_at END::timestamptz AS since
    FROM etl_jobs o
    WHERE o.integration_id = j.integration_id AND o.id <> j.id
      AND (o.status ->> 'overall') IN ('RUNNING', 'FINISHED')
    ORDER BY o.id LIMIT 1
) busy ON j.integration_id IS NOT NULL
WHERE (%(job_ids)s::int[] IS NULL OR j.id = ANY (%(job_ids)s::int[]))
  AND (%(tenant)s::text IS NULL OR j.tenant_id::text = %(tenant)s OR lower(t.name) = lower(%(tenant)s))
ORDER BY j.tenant_id, j.id
LIMIT %(limit)s;
