-- The outbox of extraction messages (etlctl.queue). A message is taken one way
-- only (a constraint holds it): published by a relay (sql/queries/relay.sql),
-- skipped by a relay (its run was over), or claimed by hand (`queue claim`,
-- then `queue done`). Pending: none of these yet, and not done.

-- name: _queue_state
-- The state of message q as `queue ls` shows it. A fragment.
CASE WHEN q.published_at IS NOT NULL THEN 'published'
     WHEN q.skipped_at IS NOT NULL THEN 'skipped'
     WHEN q.done_at IS NOT NULL THEN 'done'
     WHEN q.claimed_at IS NOT NULL THEN 'claimed'
     ELSE 'pending' END

-- name: queue_list
-- The newest %(limit)s messages (or only those still waiting: pending, or claimed
-- and not done), oldest first, each with its state and whether it still belongs
-- to its job's current run.
SELECT * FROM (
    SELECT q.id, q.created_at, q.job_id, j.job_name, q.tenant_id, q.integration_id, q.step, q.phase, q.token,
-- include: _queue_state
               AS state,
           q.claimed_at, q.claimed_by, q.done_at, q.queue_name, q.message,
           q.published_at, q.published_by, q.attempts, q.last_attempt_at, q.last_error, q.refusals,
           q.skipped_at, q.skip_reason,
           (j.status ->> 'token') IS NOT DISTINCT FROM q.token AS current_run
    FROM etlctl.queue q
    LEFT JOIN etl_jobs j ON j.id = q.job_id
    WHERE (NOT %(pending)s OR (q.done_at IS NULL AND q.published_at IS NULL AND q.skipped_at IS NULL))
    ORDER BY q.id DESC
    LIMIT %(limit)s
) newest
ORDER BY id;

-- name: queue_claim
-- Take the oldest pending message of a phase that belongs to its job's current
-- run (a message of a run that is over would make a worker extract for nothing;
-- `queue ls` shows those as stale, and `doctor` reports them); concurrent
-- claimers, and relays, skip each other's rows. A message a relay published or
-- skipped is never handed out, and one claimed here is never published.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
next AS (
    SELECT q.id FROM etlctl.queue q
    WHERE q.claimed_at IS NULL AND q.published_at IS NULL AND q.skipped_at IS NULL AND q.done_at IS NULL
      AND q.phase = %(phase)s
      AND EXISTS (SELECT 1 FROM etl_jobs j WHERE j.id = q.job_id AND (j.status ->> 'token') = q.token)
    ORDER BY q.id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE etlctl.queue q SET claimed_at = clock.now, claimed_by = %(worker)s
FROM next, clock
WHERE q.id = next.id
RETURNING q.id, q.created_at, q.job_id, q.tenant_id, q.integration_id, q.step, q.phase, q.token,
          q.claimed_at, q.claimed_by, q.queue_name, q.message;

-- name: queue_done
-- Mark a message done (idempotent); says whether it existed and was already done.
-- A pending message done by hand counts as claimed too, so no relay publishes it;
-- a published or skipped one only gets its done_at.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
target AS (SELECT id, done_at FROM etlctl.queue WHERE id = %(id)s),
done AS (
    UPDATE etlctl.queue q SET
        done_at = clock.now,
        claimed_at = CASE WHEN q.published_at IS NULL AND q.skipped_at IS NULL
                          THEN coalesce(q.claimed_at, clock.now) END
    FROM clock
    WHERE q.id = %(id)s AND q.done_at IS NULL
    RETURNING q.id
)
SELECT t.id, t.done_at AS previously_done, (SELECT count(*) FROM done) AS changed
FROM target t;
