-- The reset flow's writes. Each is ONE statement: a guarded UPDATE (expected
-- state and run token in its WHERE clause) whose SET expressions read only the
-- row being updated, so that a concurrent writer's change is never lost (under
-- READ COMMITTED, PostgreSQL re-evaluates both against the newest row version).
-- The audit row and the notification ride in the same statement.
--
-- Every statement also returns what it saw before the change (`before`, from the
-- statement's snapshot), so that a caller can say why nothing changed.

-- name: _run_token_matches
-- Whether the run token the caller gave (%(token)s; NULL: any run) names job j's
-- current run: the whole token, or a prefix of at least %(min_prefix)s characters
-- that no other run of the job known to the audit shares (as git takes a unique
-- prefix of a hash). A fragment, included in the guard of each write that takes
-- --token, so that the write itself decides; and in what it reports.
(%(token)s::text IS NULL
 OR (j.status ->> 'token') = %(token)s::text
 OR (length(%(token)s::text) >= %(min_prefix)s
     AND starts_with(j.status ->> 'token', %(token)s::text)
     AND NOT EXISTS (SELECT 1 FROM etlctl.audit a
                     WHERE a.job_id = j.id AND a.token IS DISTINCT FROM (j.status ->> 'token')
                       AND starts_with(a.token, %(token)s::text))))

-- name: _run_token_report
-- What a write that takes --token reports about it, from its own snapshot: whether
-- the token named the current run, and whether it is a long enough prefix of the
-- current token (when it did not name the run, another run shares that prefix:
-- the caller asks for more characters). A fragment of the select list of `before`.
coalesce(
-- include: _run_token_matches
         , false) AS token_matches,
coalesce(length(%(token)s::text) >= %(min_prefix)s
         AND starts_with(j.status ->> 'token', %(token)s::text)
         AND (j.status ->> 'token') <> %(token)s::text, false) AS token_is_prefix

-- name: complete_job
-- RUNNING -> FINISHED, as the existing complete_etl_job() does
-- (existing-system-contract.md §5): next_run, error_message cleared, retry_count
-- 0, last_sync_date only when one is given (%(sync_date)s), reset_attempt 0; and
-- a pending reset: the first check is due %(delay)s seconds from now
-- (reset_deadline, ISO 8601 with the session zone's offset).
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
before AS (
    SELECT j.id, j.tenant_id, j.status ->> 'overall' AS overall, j.status ->> 'token' AS token,
-- include: _run_token_report
    FROM etl_jobs j WHERE j.id = %(job_id)s
),
changed AS (
    UPDATE etl_jobs j SET
        status = j.status || jsonb_build_object(
            'overall', 'FINISHED',
            'reset_stage', 'check',
            'reset_deadline', to_jsonb(clock.now + make_interval(secs => %(delay)s)),
            'reset_attempt', 0,
            'reset_gave_up_at', NULL,
            'reset_token', j.status -> 'token'),
        last_run_finished_at = clock.now,
        -- The extraction date, when the caller gives one; else unchanged (never a guess).
        last_sync_date = coalesce(%(sync_date)s::timestamptz::timestamp, j.last_sync_date),
        next_run = NULL,
        error_message = NULL,
        retry_count = 0,
        last_updated_at = clock.now
    FROM clock
    WHERE j.id = %(job_id)s
      AND j.status ->> 'overall' = 'RUNNING'
      AND
-- include: _run_token_matches
    RETURNING j.id, j.tenant_id, j.status, j.last_sync_date::timestamptz AS last_sync_date
),
audit AS (
    INSERT INTO etlctl.audit (at, job_id, tenant_id, from_state, to_state, token, command, host, pid, details)
    SELECT clock.now, c.id, c.tenant_id, 'RUNNING', 'FINISHED', c.status ->> 'token',
           %(actor_command)s, %(actor_host)s, %(actor_pid)s,
           jsonb_build_object('last_sync_date', c.last_sync_date, 'reset_deadline', c.status -> 'reset_deadline')
    FROM changed c, clock
    RETURNING 1
),
notified AS (
    SELECT pg_notify('etl_job_status', json_build_object('job_id', c.id, 'tenant_id', c.tenant_id, 'overall', 'FINISHED')::text)
    FROM changed c
)
SELECT b.id, b.overall, b.token, b.token_matches, b.token_is_prefix, (SELECT now FROM clock) AS now,
       (SELECT count(*) FROM changed) AS changed,
       (SELECT (etlctl.readable_status(status)).status FROM changed) AS new_status,
       (SELECT last_sync_date FROM changed) AS last_sync_date,
       (SELECT count(*) FROM audit) AS audited,
       (SELECT count(*) FROM notified) AS notified
FROM before b;

-- name: step_update
-- One worker status update: steps.<step>.<phase> = <value>, a single guarded
-- jsonb_set on the current row. The step must be in the job's document or in
-- its kind; it is created when the kind has it and the document does not yet.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
before AS (
    SELECT j.id, j.tenant_id, j.status ->> 'overall' AS overall, j.status ->> 'token' AS token,
           k.kind,
           (SELECT array_agg(s.step ORDER BY s.position) FROM etlctl.kind_steps s WHERE s.kind = k.kind) AS kind_steps,
           jsonb_typeof(j.status -> 'steps') AS steps_type,
           coalesce(j.status -> 'steps' ? %(step)s, false) AS in_document,
           jsonb_typeof(j.status -> 'steps' -> %(step)s) AS step_type,
           j.status -> 'steps' -> %(step)s -> %(phase)s AS current_value,
-- include: _run_token_report
    FROM etl_jobs j
    LEFT JOIN integrations i ON i.id = j.integration_id
    CROSS JOIN LATERAL (SELECT etlctl.job_kind(j.job_name, i.provider) AS kind) k
    WHERE j.id = %(job_id)s
),
allowed AS (
    SELECT b.id FROM before b
    WHERE b.in_document OR %(step)s = ANY (coalesce(b.kind_steps, '{}'))
),
changed AS (
    UPDATE etl_jobs j SET
        status = jsonb_set(
            jsonb_set(j.status, ARRAY['steps', %(step)s], coalesce(j.status -> 'steps' -> %(step)s, '{}'), true),
            ARRAY['steps', %(step)s, %(phase)s], to_jsonb(%(value)s::text), true),
        last_updated_at = clock.now
    FROM clock, allowed a
    WHERE j.id = a.id
      AND j.status ->> 'overall' IN ('RUNNING', 'FINISHED')
      AND
-- include: _run_token_matches
      AND jsonb_typeof(j.status -> 'steps') = 'object'
      AND coalesce(jsonb_typeof(j.status -> 'steps' -> %(step)s), 'object') = 'object'
      AND (j.status -> 'steps' -> %(step)s -> %(phase)s) IS DISTINCT FROM to_jsonb(%(value)s::text)
    RETURNING j.id, j.tenant_id, j.status ->> 'overall' AS overall, j.status ->> 'token' AS token
),
audit AS (
    INSERT INTO etlctl.audit (at, job_id, tenant_id, from_state, to_state, token, command, host, pid, details)
    SELECT clock.now, c.id, c.tenant_id, c.overall, c.overall, c.token,
           %(actor_command)s, %(actor_host)s, %(actor_pid)s,
           jsonb_build_object('step', %(step)s::text, 'phase', %(phase)s::text, 'to', %(value)s::text,
                              'from', (SELECT current_value FROM before))
    FROM changed c, clock
    RETURNING 1
),
notified AS (
    SELECT pg_notify('etl_job_status', json_build_object('job_id', c.id, 'tenant_id', c.tenant_id, 'overall', c.overall)::text)
    FROM changed c
)
SELECT b.*, (SELECT count(*) FROM allowed) > 0 AS step_allowed,
       (SELECT count(*) FROM changed) AS changed,
       (SELECT count(*) FROM audit) AS audited,
       (SELECT count(*) FROM notified) AS notified
FROM before b;

-- name: _transitions
-- Apply a batch of reset-flow decisions (reset, give_up, schedule, retry,
-- cooldown) in one statement. Each row's guard: the document still holds the
-- values etlctl owns as they were read (%(expected)s, containment of scalars),
-- the owned keys that were absent are still absent, and, for a reset or a
-- give-up, the steps are exactly the ones that were judged (their md5, computed
-- here both times, so that no JSON number is ever rounded through Python). A
-- forced reset of a document whose run keys are not plain values, or that
-- drops the parts etlctl cannot read (%(drops)s), is guarded on the md5 of the
-- whole document instead (%(status_digests)s).
-- A fragment: apply_transitions and apply_transitions_skip_locked define the
-- `clock` and `locked` CTEs before it.
d AS (
    SELECT * FROM unnest(
        %(job_ids)s::int[], %(actions)s::text[], %(expected)s::jsonb[], %(absent)s::jsonb[],
        %(steps_digests)s::text[], %(check_steps)s::bool[], %(status_digests)s::text[], %(drops)s::jsonb[],
        %(from_states)s::text[], %(tokens)s::text[], %(stages)s::text[], %(deadlines)s::timestamptz[],
        %(attempts)s::int[], %(reasons)s::text[], %(details)s::jsonb[]
    ) AS d (job_id, action, expected, absent, steps_digest, check_steps, status_digest, drop_paths,
            from_state, token, stage, deadline, attempt, reason, details)
),
changed AS (
    UPDATE etl_jobs j SET
        status = CASE d.action
            WHEN 'reset' THEN etlctl.ready_status(j.status, d.drop_paths)
            WHEN 'give_up' THEN j.status || jsonb_build_object(
                'reset_stage', 'gave_up', 'reset_deadline', NULL,
                'reset_attempt', d.attempt, 'reset_gave_up_at', to_jsonb(clock.now), 'reset_token', j.status -> 'token')
            ELSE j.status || jsonb_build_object(
                'reset_stage', d.stage, 'reset_deadline', to_jsonb(d.deadline), 'reset_attempt', d.attempt,
                'reset_token', j.status -> 'token')
        END,
        error_message = CASE d.action WHEN 'reset' THEN NULL WHEN 'give_up' THEN d.reason ELSE j.error_message END,
        -- timestamptz -> timestamp converts in the session TimeZone: the configured zone.
        next_run = CASE WHEN d.action = 'reset'
                        THEN (clock.now + make_interval(mins => j.schedule_interval_minutes))::timestamp
                        ELSE j.next_run END,
        last_updated_at = clock.now
    FROM d, clock
    WHERE j.id = d.job_id
      AND d.job_id IN (SELECT id FROM locked)
      AND (d.expected IS NULL OR j.status @> d.expected)
      AND NOT (j.status ?| ARRAY(SELECT jsonb_array_elements_text(d.absent)))
      AND (NOT d.check_steps OR md5((j.status -> 'steps')::text) IS NOT DISTINCT FROM d.steps_digest)
      AND (d.status_digest IS NULL OR md5(j.status::text) = d.status_digest)
    RETURNING j.id, j.tenant_id, j.job_name, d.action, d.from_state,
              j.status ->> 'overall' AS to_state, d.token, d.reason, d.details,
              (etlctl.readable_status(j.status)).status, j.next_run::timestamptz AS next_run
),
audit AS (
    INSERT INTO etlctl.audit (at, job_id, tenant_id, from_state, to_state, token, command, host, pid, details)
    SELECT clock.now, c.id, c.tenant_id, c.from_state, c.to_state, c.token,
           %(actor_command)s, %(actor_host)s, %(actor_pid)s,
           c.details || jsonb_build_object('action', c.action, 'reason', c.reason,
                                           'reset_stage', c.status -> 'reset_stage',
                                           'reset_deadline', c.status -> 'reset_deadline',
                                           'reset_attempt', c.status -> 'reset_attempt')
    FROM changed c, clock
    RETURNING 1
),
notified AS (
    SELECT pg_notify('etl_job_status', json_build_object('job_id', c.id, 'tenant_id', c.tenant_id, 'overall', c.to_state)::text)
    FROM changed c
)
SELECT c.*, (SELECT count(*) FROM audit) AS audited, (SELECT count(*) FROM notified) AS notified,
       (SELECT now FROM clock) AS now
FROM changed c;

-- name: apply_transitions
-- The transitions of one command on its job (reset, wait-and-reset): a row lock
-- another session holds is waited for, up to lock_timeout (then exit 7).
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
locked AS (SELECT unnest(%(job_ids)s::int[]) AS id),
-- include: _transitions

-- name: apply_transitions_skip_locked
-- The transitions of a sweep: a row another session holds locked is skipped and
-- left for the next tick, so that one stuck transaction never stalls every job.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
locked AS (
    SELECT id FROM etl_jobs WHERE id = ANY (%(job_ids)s::int[])
    ORDER BY id
    FOR NO KEY UPDATE SKIP LOCKED
),
-- include: _transitions

-- name: sweep_batch
-- FINISHED jobs (of the tenants %(tenant_ids)s, an int[]; NULL: every tenant)
-- whose reset flow may have something to do now, in id order after %(after_id)s
-- (see job_row): no pending reset yet, a deadline that has passed, or reset keys
-- that cannot be read, such as a deadline further ahead than the longest wait of
-- the flow, %(max_wait)s seconds (reported, never repaired, never waited for).
-- Gave-up jobs wait for a person, unless the give-up belongs to an earlier run
-- (lifecycle.reset_state).
-- include: job_row
WHERE j.status ->> 'overall' = 'FINISHED'
  AND j.id > %(after_id)s
  AND (%(tenant_ids)s::int[] IS NULL OR j.tenant_id = ANY (%(tenant_ids)s::int[]))
  AND ((j.status ->> 'reset_stage') IS DISTINCT FROM 'gave_up'
       OR (j.status ? 'reset_token' AND (j.status ->> 'reset_token') IS DISTINCT FROM (j.status ->> 'token')))
  AND coalesce(etlctl.try_timestamptz(j.status ->> 'reset_deadline') <= coalesce(%(now)s::timestamptz, now())
               OR etlctl.try_timestamptz(j.status ->> 'reset_deadline')
                  > coalesce(%(now)s::timestamptz, now()) + make_interval(secs => %(max_wait)s), true)
ORDER BY j.id
LIMIT %(batch)s;

-- name: own_reset
-- After a lost connection, the job is no longer FINISHED on run %(token)s: did this
-- very process reset it before the answer was lost? Its audit row names this
-- process (host, pid, command). The job as it is now, in the shape of apply_transitions' rows.
SELECT (etlctl.readable_status(j.status)).status, j.next_run::timestamptz AS next_run,
       coalesce(%(now)s::timestamptz, now()) AS now
FROM etlctl.audit a
JOIN etl_jobs j ON j.id = a.job_id
WHERE a.job_id = %(job_id)s AND a.token IS NOT DISTINCT FROM %(token)s AND a.to_state = 'READY'
  AND a.host = %(actor_host)s AND a.pid = %(actor_pid)s AND a.command = %(actor_command)s
ORDER BY a.id DESC
LIMIT 1
