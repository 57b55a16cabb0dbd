-- `etlctl run`: its heartbeat (etlctl.runners, migration 0008) and the earliest
-- deadline it knows of. The work of a pass is the sweep's, the scheduler's and
-- the relay's own queries (flow.sql, schedule.sql, relay.sql): nothing here acts.

-- name: run_listen_jobs
-- Wake `etlctl run` on every etlctl state change (a job finished, a step changed,
-- a job reset or started); the outbox's channel is relay_listen's.
LISTEN etl_job_status;

-- name: run_register
-- A run starting on this host with this pid: its heartbeat row, new or taken over
-- (the same pid on the same host is a new process: a container's pid 1).
INSERT INTO etlctl.runners AS r (host, pid, started_at, max_sleep)
VALUES (%(actor_host)s, %(actor_pid)s, coalesce(%(now)s::timestamptz, now()), %(max_sleep)s)
ON CONFLICT (host, pid) DO UPDATE SET
    started_at = excluded.started_at, last_pass_at = NULL, passes = 0, max_sleep = excluded.max_sleep,
    stopped_at = NULL
RETURNING r.id, pg_backend_pid() AS backend_pid;

-- name: run_stopped
-- A run that stops on a signal says so: doctor does not report it as lost.
UPDATE etlctl.runners SET stopped_at = coalesce(%(now)s::timestamptz, now())
WHERE host = %(actor_host)s AND pid = %(actor_pid)s;

-- name: _run_reset_deadlines
-- When the reset flow of each FINISHED job has its next step, as the sweep
-- decides it (etlctl.core.lifecycle): its reset_deadline (the next check, or the
-- end of the cool-down), or, when no reset is pending for its run, %(delay)s
-- seconds after it finished (its first check). Not a job whose reset gave up (it
-- waits for a person), nor one whose reset keys cannot be read (the sweep skips
-- it: doctor reports it); keys of an earlier run (reset_token is not the token)
-- are no pending reset. A fragment of run_pass_done, after its `clock`.
flow AS (
    SELECT j.id,
           coalesce(j.status ? 'reset_token'
                    AND (j.status -> 'reset_token') IS DISTINCT FROM coalesce(j.status -> 'token', 'null'),
                    false) AS earlier_run,
           j.status ->> 'reset_stage' AS stage,
           jsonb_typeof(j.status -> 'reset_deadline') AS deadline_type,
           -- An ISO time with an offset, as the flow writes it (lifecycle.parse_time): else no time at all.
           CASE WHEN (j.status ->> 'reset_deadline') ~ '(Z|[+-][0-9]{2}(:?[0-9]{2})?)$'
                THEN etlctl.try_timestamptz(j.status ->> 'reset_deadline') END AS deadline,
           coalesce(j.last_run_finished_at::timestamptz, clock.now) + make_interval(secs => %(delay)s) AS first_check
    FROM etl_jobs j, clock
    WHERE (j.status ->> 'overall') = 'FINISHED'
      AND coalesce(jsonb_typeof(j.status -> 'token'), 'null') IN ('null', 'string')
      AND coalesce(jsonb_typeof(j.status -> 'reset_token'), 'null') IN ('null', 'string')
      AND coalesce(j.status ->> 'reset_stage', 'check') IN ('check', 'cooldown', 'gave_up')
      AND (coalesce(jsonb_typeof(j.status -> 'reset_attempt'), 'null') = 'null'
           OR (jsonb_typeof(j.status -> 'reset_attempt') = 'number'
               AND (j.status ->> 'reset_attempt') ~ '^[0-9]{1,7}$'))
),
reset_deadlines AS (
    SELECT f.id,
           CASE WHEN f.earlier_run OR f.deadline_type IS NULL OR f.deadline_type = 'null' THEN f.first_check
                ELSE f.deadline END AS at
    FROM flow f, clock
    WHERE (f.earlier_run OR f.stage IS DISTINCT FROM 'gave_up')
      -- A deadline that is no ISO time with an offset, or further ahead than the longest wait, is malformed.
      AND (f.earlier_run OR f.deadline_type IS NULL OR f.deadline_type = 'null'
           OR (f.deadline_type = 'string' AND f.deadline IS NOT NULL
               AND f.deadline <= clock.now + make_interval(secs => %(max_wait)s)))
)

-- name: _run_startable
-- The conditions under which a tick starts a due job (schedule_start's
-- candidates, less "due now"): active, of an active tenant and (when it has one)
-- an active, idle integration, and of a kind that defines a message and a first
-- step. A fragment: the WHERE clause of a query over etl_jobs j, tenants t,
-- integrations i (LEFT JOIN) and etlctl.job_kinds kd, with the job's kind k.
(j.status ->> 'overall') IN ('READY', 'FAILED', 'RATE_LIMIT_REACHED', 'RATE_LIMITED')
AND j.active AND t.active AND (j.integration_id IS NULL OR i.active)
AND kd.message_provider IS NOT NULL
AND etlctl.first_step(j.status -> 'steps', k.kind) IS NOT NULL
AND (j.integration_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM etl_jobs o WHERE o.integration_id = j.integration_id
      AND (o.status ->> 'overall') IN ('RUNNING', 'FINISHED')))

-- name: run_pass_done
-- After each pass of `etlctl run`: its heartbeat (last pass, passes), and the
-- earliest deadline it knows of, until which it sleeps (at most --max-sleep):
--   the reset flow of each FINISHED job (_run_reset_deadlines);
--   the due time of each job a tick could start: the scheduler's own due rule
--     (`_due_at`, the expression of the index etlctl_jobs_due, walked in order);
--   with %(relaying)s (a broker is configured), each message pending in the outbox.
-- A deadline at or before the pass's start (now - %(pass_seconds)s) that is still
-- there is one the pass did not do: a row another session held locked, a message
-- the broker refused, a job whose queues could not be looked at. Those are
-- counted apart (`overdue`), and run retries them with backoff rather than at
-- once (it would spin); `next_at` is the earliest deadline after the pass's start.
-- Writers that send no NOTIFY (a next_run changed by hand, a worker's SQL) are
-- seen at the next pass: at most --max-sleep later.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
since AS (SELECT clock.now - make_interval(secs => %(pass_seconds)s) AS at FROM clock),
beat AS (
    INSERT INTO etlctl.runners AS r (host, pid, started_at, last_pass_at, passes, max_sleep)
    SELECT %(actor_host)s, %(actor_pid)s, clock.now, clock.now, 1, %(max_sleep)s FROM clock
    ON CONFLICT (host, pid) DO UPDATE SET
        last_pass_at = excluded.last_pass_at, passes = r.passes + 1, max_sleep = excluded.max_sleep, stopped_at = NULL
    RETURNING r.passes
),
-- include: _run_reset_deadlines
, resets AS (
    SELECT (SELECT count(*) FROM reset_deadlines d, since WHERE d.at <= since.at) AS overdue,
           (SELECT d.at FROM reset_deadlines d, since WHERE d.at > since.at ORDER BY d.at, d.id LIMIT 1) AS next_at,
           (SELECT d.id FROM reset_deadlines d, since WHERE d.at > since.at ORDER BY d.at, d.id LIMIT 1) AS next_job
),
startable AS NOT MATERIALIZED (
    SELECT j.id,
-- include: _due_at
               AS due
    FROM etl_jobs j
    JOIN tenants t ON t.id = j.tenant_id
    LEFT JOIN integrations i ON i.id = j.integration_id
    CROSS JOIN LATERAL (SELECT etlctl.job_kind(j.job_name, i.provider) AS kind) k
    JOIN etlctl.job_kinds kd ON kd.name = k.kind
    WHERE
-- include: _run_startable
),
first_overdue_start AS (
    SELECT s.id FROM startable s, since WHERE s.due <= since.at::timestamp ORDER BY s.due LIMIT 1
),
next_start AS (
    SELECT s.id, s.due::timestamptz AS at FROM startable s, since
    WHERE s.due > since.at::timestamp ORDER BY s.due, s.id LIMIT 1
),
outbox AS (
    SELECT count(*) FILTER (WHERE q.created_at <= since.at) AS overdue,
           min(q.created_at) FILTER (WHERE q.created_at > since.at) AS next_at
    FROM etlctl.queue q, since
    WHERE %(relaying)s AND q.queue_name IS NOT NULL
      AND q.claimed_at IS NULL AND q.published_at IS NULL AND q.skipped_at IS NULL AND q.done_at IS NULL
)
SELECT least(resets.next_at, next_start.at, outbox.next_at) AS next_at,
       CASE least(resets.next_at, next_start.at, outbox.next_at)
           WHEN resets.next_at THEN 'the reset flow of job ' || resets.next_job
           WHEN next_start.at THEN 'the start of job ' || next_start.id
           WHEN outbox.next_at THEN 'a message in the outbox'
       END AS next_what,
       resets.overdue AS overdue_resets,
       (SELECT count(*) FROM first_overdue_start) AS overdue_starts,
       outbox.overdue AS overdue_messages,
       clock.now, pg_backend_pid() AS backend_pid, (SELECT passes FROM beat) AS passes
FROM clock
CROSS JOIN resets
CROSS JOIN outbox
LEFT JOIN next_start ON true;

-- name: run_heartbeats
-- For doctor: each `etlctl run` whose heartbeat (its last pass, else its start)
-- is older than twice its --max-sleep, and that neither stopped on a signal nor
-- was replaced by a run started later on the same host (a restart after kill -9
-- or a crash: systemd's Restart=, a container's). Nothing when no run was ever
-- used (no rows). Oldest first.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now)
SELECT r.id, r.host, r.pid, r.started_at, r.last_pass_at, r.passes, r.max_sleep,
       coalesce(r.last_pass_at, r.started_at) AS seen_at, clock.now
FROM etlctl.runners r
CROSS JOIN clock
WHERE r.stopped_at IS NULL
  AND coalesce(r.last_pass_at, r.started_at) < clock.now - make_interval(secs => 2 * r.max_sleep)
  AND NOT EXISTS (SELECT 1 FROM etlctl.runners later
                  WHERE later.host = r.host AND later.started_at > r.started_at)
ORDER BY seen_at, r.id;
