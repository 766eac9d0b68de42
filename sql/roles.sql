-- Roles for relaysync, least privilege. Replace the passwords; run each block
-- on the server it names. `relaysync setup …` creates the schemas, publication
-- and slot itself when run as these roles.

-- At HO: reads the tables through a slot, owns its bookkeeping schema.
CREATE ROLE relaysync_ho LOGIN REPLICATION PASSWORD 'change-me';
GRANT CREATE ON DATABASE ho TO relaysync_ho;           -- schema relaysync
GRANT USAGE ON SCHEMA public TO relaysync_ho;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO relaysync_ho;
-- CREATE PUBLICATION … FOR TABLE needs ownership of the tables; either run
-- `relaysync setup ho` once as the tables' owner, or create the publication
-- yourself (then setup only checks it):
--   CREATE PUBLICATION relaysync FOR TABLE public.items, public.prices;
-- pg_hba.conf must allow the role a replication connection to the database:
--   host  ho  relaysync_ho  10.0.0.0/8  scram-sha-256

-- At the relay: owns the relay schema.
CREATE ROLE relaysync_relay LOGIN PASSWORD 'change-me';
GRANT CREATE ON DATABASE relay TO relaysync_relay;

-- At each site: writes the synced tables without firing their triggers.
CREATE ROLE relaysync_pos LOGIN PASSWORD 'change-me';
GRANT CREATE ON DATABASE pos TO relaysync_pos;         -- schema relaysync
GRANT USAGE ON SCHEMA public TO relaysync_pos;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.items, public.prices TO relaysync_pos;
GRANT TEMPORARY ON DATABASE pos TO relaysync_pos;      -- staging tables
-- Applying as a replica (no triggers, no FK checks) needs this (PostgreSQL 15+):
GRANT SET ON PARAMETER session_replication_role TO relaysync_pos;
-- (On PostgreSQL 14, run the site worker as a superuser instead.)

-- With [[upstream]] tables (site data merged into HO):
-- at each site, the site role captures its own upstream tables and marks what
-- it applies with a replication origin (so it is not captured back up):
ALTER ROLE relaysync_pos REPLICATION;
GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text) TO relaysync_pos;
GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO relaysync_pos;
GRANT SELECT ON public.device_events, public.users TO relaysync_pos;
-- at HO, the HO role merges into the upstream tables and marks its merges:
GRANT SELECT, INSERT, UPDATE, DELETE ON public.device_events, public.users TO relaysync_ho;
GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text) TO relaysync_ho;
GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO relaysync_ho;
GRANT SET ON PARAMETER session_replication_role TO relaysync_ho;
