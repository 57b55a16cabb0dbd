-- Statistics that let the planner see how few jobs are due (found by `make bench`:
-- see BENCHMARKS.md, "Plans").
--
-- The planner ignores the statistics of a partial expression index, so for the
-- due rule of etlctl_jobs_due it guessed that 0.5% of all jobs were due: 5,000 at
-- 1M jobs when 1,000 were. With that guess, schedule-next's claim joined the due
-- jobs to integrations and tenants by scanning both tables whole (100 ms at 1M
-- jobs against 6 ms at 10k). Statistics on the job's state and on its due time
-- (over the whole table) give the right count, and the claim looks up only the
-- integrations of the due jobs.
CREATE STATISTICS IF NOT EXISTS etlctl.etl_jobs_due_stats ON
    (status ->> 'overall'),
    (etlctl.due_at(status ->> 'overall', next_run, last_run_started_at, last_run_finished_at,
                   last_updated_at, retry_interval_minutes))
FROM etl_jobs;

-- Fill them now rather than at the next autovacuum (about a second per million jobs).
ANALYZE etl_jobs;
