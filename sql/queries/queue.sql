-- The outbox of extraction messages (etlctl.queue): the contract for a relay.

-- name: queue_list
-- The newest %(limit)s messages (or only those not done), oldest first, and whether
-- each still belongs to its job's current run.
SELECT * FROM (
    SELECT q.id, q.created_at, q.job_id, j.job_name, q.tenant_id, q.integration_id, q.step, q.phase, q.token,
           q.claimed_at, q.claimed_by, q.done_at, q.queue_name, q.message,
           (j.status ->> 'token') IS NOT DISTINCT FROM q.token AS current_run
    FROM etlctl.queue q
    LEFT JOIN etl_jobs j ON j.id = q.job_id
    WHERE (NOT %(pending)s OR q.done_at IS NULL)
    ORDER BY q.id DESC
    LIMIT %(limit)s
) newest
ORDER BY id;

-- name: queue_claim
-- Take the oldest unclaimed message of a phase that belongs to its job's current
-- run (a message of a run that is over would make a worker extract for nothing;
-- `queue ls` shows those as stale, and `doctor` reports them); concurrent
-- claimers skip each other's rows.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
next AS (
    SELECT q.id FROM etlctl.queue q
    WHERE q.claimed_at IS NULL AND q.phase = %(phase)s
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
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
target AS (SELECT id, done_at FROM etlctl.queue WHERE id = %(id)s),
done AS (
    UPDATE etlctl.queue q SET done_at = clock.now, claimed_at = coalesce(q.claimed_at, clock.now)
    FROM clock
    WHERE q.id = %(id)s AND q.done_at IS NULL
    RETURNING q.id
)
SELECT t.id, t.done_at AS previously_done, (SELECT count(*) FROM done) AS changed
FROM target t;
