-- The relay: publishing the outbox (etlctl.queue) to RabbitMQ.
--
-- One batch is one transaction: relay_take locks up to %(limit)s pending
-- messages, oldest first, skipping rows another relay (or `queue claim`) holds,
-- and marks in the same statement those whose run is over as skipped; the relay
-- publishes the others and waits for the broker's confirms; relay_mark records
-- each outcome; then the commit. Until the commit no other relay can take the
-- batch, so a message is published twice only when a relay dies between the
-- broker's confirm and its commit (the next relay publishes the batch again).

-- name: relay_listen
-- Wake the relay when a transaction queues a message (schedule-next's start and
-- chain notify etlctl_queue in the statement that queues).
LISTEN etlctl_queue;

-- name: relay_take
-- Lock the next batch of pending messages (ids above %(after)s; only %(ids)s, a
-- bigint[], when given) and skip those that must never be published: the job is
-- gone, its run is over (its token is no longer the job's), or the row has no
-- queue_name (queued before migration 0005). Returns every message of the batch,
-- with skip_reason set on those just skipped, and the clock as epoch seconds
-- (the messages' AMQP timestamp).
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
batch AS (
    SELECT q.id FROM etlctl.queue q
    WHERE q.claimed_at IS NULL AND q.published_at IS NULL AND q.skipped_at IS NULL AND q.done_at IS NULL
      AND q.id > %(after)s
      AND (%(ids)s::bigint[] IS NULL OR q.id = ANY (%(ids)s::bigint[]))
    ORDER BY q.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
judged AS (
    SELECT q.id, q.created_at, q.job_id, q.tenant_id, q.token, q.step, q.phase, q.queue_name, q.message,
           q.attempts, q.last_error,
           CASE WHEN j.id IS NULL THEN 'job ' || q.job_id || ' no longer exists'
                WHEN (j.status ->> 'token') IS DISTINCT FROM q.token
                    THEN 'run ' || q.token || ' is over: job ' || q.job_id || ' is '
                         || coalesce(j.status ->> 'overall', 'without a state')
                         || coalesce(' in run ' || (j.status ->> 'token'), ' with no run')
                WHEN q.queue_name IS NULL THEN 'no queue_name: queued before migration 0005, in an older format'
           END AS stale
    FROM etlctl.queue q
    JOIN batch b ON b.id = q.id
    LEFT JOIN etl_jobs j ON j.id = q.job_id
),
skipped AS (
    UPDATE etlctl.queue q SET skipped_at = clock.now, skip_reason = s.stale
    FROM judged s, clock
    WHERE q.id = s.id AND s.stale IS NOT NULL
    RETURNING q.id
)
SELECT j.id, j.created_at, j.job_id, j.tenant_id, j.token, j.step, j.phase, j.queue_name, j.message,
       j.attempts, j.last_error, j.stale AS skip_reason,
       extract(epoch FROM clock.now)::bigint AS stamp,
       (SELECT count(*) FROM skipped) AS skipped
FROM judged j
CROSS JOIN clock
ORDER BY j.id;

-- name: relay_mark
-- Record what the broker said about each message of the batch: published (it
-- confirmed), or still pending with the attempt counted and the reason (a nack or
-- a return, which the broker refused: `refused`; or no answer). Guarded on the
-- message still being pending, though the batch's lock already ensures it.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now),
outcome AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(published)s::boolean[], %(errors)s::text[], %(refused)s::boolean[])
        AS o (id, published, error, refused)
)
UPDATE etlctl.queue q SET
    published_at = CASE WHEN o.published THEN clock.now END,
    published_by = CASE WHEN o.published THEN %(actor_command)s || ' on ' || %(actor_host)s || ' (pid ' || %(actor_pid)s || ')' END,
    attempts = q.attempts + 1,
    last_attempt_at = clock.now,
    -- After a success the last error stays: it tells why earlier attempts failed.
    last_error = CASE WHEN o.published THEN q.last_error ELSE o.error END,
    refusals = q.refusals + CASE WHEN o.refused THEN 1 ELSE 0 END
FROM outcome o, clock
WHERE q.id = o.id
  AND q.claimed_at IS NULL AND q.published_at IS NULL AND q.skipped_at IS NULL AND q.done_at IS NULL
RETURNING q.id, q.published_at IS NOT NULL AS published, q.attempts;

-- name: relay_backlog
-- Messages still pending (for the relay's --dry-run and its summary): how many,
-- and the oldest one's age in seconds.
WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now)
SELECT count(*) AS pending, extract(epoch FROM clock.now - min(q.created_at))::float8 AS oldest_seconds
FROM etlctl.queue q
CROSS JOIN clock
WHERE q.claimed_at IS NULL AND q.published_at IS NULL AND q.skipped_at IS NULL AND q.done_at IS NULL
GROUP BY clock.now;
