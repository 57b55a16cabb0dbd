-- `etlctl run` (issue 13): a heartbeat row per running process, so that doctor
-- can say when a `run` stopped being seen. What this migration adds:
--
-- etlctl.runners: one row per process (host, pid): when it started, when it
-- last finished a pass and how many it made, its --max-sleep (doctor reports a
-- run not seen for more than twice that), and when it stopped on a signal. A
-- process that starts again on the same host with the same pid (a container's
-- pid 1) takes over its row. Rows are never deleted by etlctl: a run that was
-- killed and replaced on the same host is told apart by its successor's start.
-- Nothing here touches etl_jobs.
CREATE TABLE IF NOT EXISTS etlctl.runners (
    id bigserial PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    last_pass_at timestamptz,
    passes bigint NOT NULL DEFAULT 0 CHECK (passes >= 0),
    max_sleep double precision NOT NULL CHECK (max_sleep > 0),
    stopped_at timestamptz,
    CONSTRAINT runners_host_pid_key UNIQUE (host, pid)
);
