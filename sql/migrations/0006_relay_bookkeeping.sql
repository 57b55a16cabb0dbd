-- The relay's bookkeeping on the outbox (issue 10): what happened to each
-- message on its way to RabbitMQ. What this migration does to an install:
--
-- 1. etlctl.queue gets, per message: published_at and published_by (the broker
--    confirmed it; set only after the confirm), attempts, last_attempt_at and
--    last_error (every try, and why the last failed), refusals (how often the
--    broker nacked or returned it), and skipped_at and skip_reason (never
--    published: its run was over when the relay looked).
-- 2. A message is taken one way only: claimed by hand (`queue claim`),
--    published by a relay, or skipped; a constraint holds it.
-- 3. The index of unclaimed messages becomes the index of pending ones (not
--    claimed, published, skipped or done): the relay and `queue claim` read it,
--    and it stays small however many messages were published.
--
-- Existing rows are not changed: messages claimed or done before stay so, and
-- pending ones are published by the next relay (or skipped, if their run is over).

-- 1. Bookkeeping.
ALTER TABLE etlctl.queue
    ADD COLUMN IF NOT EXISTS published_at timestamptz,
    ADD COLUMN IF NOT EXISTS published_by text,
    ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS last_attempt_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_error text,
    ADD COLUMN IF NOT EXISTS refusals integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS skipped_at timestamptz,
    ADD COLUMN IF NOT EXISTS skip_reason text;

ALTER TABLE etlctl.queue
    ADD CONSTRAINT queue_attempts_check CHECK (attempts >= 0 AND refusals >= 0 AND refusals <= attempts),
    -- 2. Claimed, published or skipped: at most one of them.
    ADD CONSTRAINT queue_one_way_check CHECK (num_nonnulls(claimed_at, published_at, skipped_at) <= 1),
    ADD CONSTRAINT queue_skip_reason_check CHECK ((skipped_at IS NULL) = (skip_reason IS NULL));

-- 3. Pending messages, oldest first.
DROP INDEX IF EXISTS etlctl.queue_unclaimed;
CREATE INDEX IF NOT EXISTS queue_pending ON etlctl.queue (id)
    WHERE claimed_at IS NULL AND published_at IS NULL AND skipped_at IS NULL AND done_at IS NULL;
