-- Replication: what etlctl needs to know of the server it reached, and of the standbys
-- streaming from it. Facts of the servers themselves (their own clocks, their settings),
-- never of jobs: no %(now)s here, on purpose.

-- name: session_read_only
-- Whether this session may write: a hot standby (still in recovery), or a server
-- whose transactions are read-only by default. Asked after a reconnection, when a
-- DSN without target_session_attrs=read-write may have reached a standby.
SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool AS read_only

-- name: replication_facts
-- What doctor judges (etlctl/oncall/doctor_replication.py): whether this server is a
-- standby and how old the last transaction it replayed is (its own clock), the
-- commit settings in force for this session's role and database, and each standby
-- streaming from it. pg_stat_replication shows a role without pg_read_all_stats
-- (or pg_monitor) that a standby exists, never its sync_state: NULL then.
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('synchronous_standby_names') AS synchronous_standby_names,
       CASE WHEN pg_is_in_recovery()
            THEN extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 END AS replay_age,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                           'name', r.application_name, 'state', r.state, 'sync_state', r.sync_state,
                           'replay_lag', extract(epoch FROM r.replay_lag)::float8)
                       ORDER BY r.application_name)
                 FROM pg_stat_replication r), '[]'::jsonb) AS standbys,
       -- The fix when the standbys' mode is hidden, its role name quoted by the server (doubled: psycopg).
       format('GRANT pg_monitor TO %%I', session_user) AS grant_monitor

-- Fixes that doctor prints for a superuser to run with psql on the primary, one
-- statement per -c (ALTER SYSTEM refuses to run inside a transaction block); never
-- run by etlctl. fix_synchronous_standby: any one connected standby (*) confirms
-- each commit (name them instead of * to choose: 'FIRST 1 (b, c)'); fix_remote_apply:
-- a commit is acknowledged once that standby has applied it; fix_no_synchronous_standby:
-- stop waiting for a standby that is gone (the commits waiting now are then
-- acknowledged without one).

-- name: fix_synchronous_standby
ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (*)'

-- name: fix_remote_apply
ALTER SYSTEM SET synchronous_commit = 'remote_apply'

-- name: fix_no_synchronous_standby
ALTER SYSTEM SET synchronous_standby_names = ''

-- name: fix_reload_configuration
SELECT pg_reload_conf()
