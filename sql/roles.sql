-- Roles for relaysync, least privilege. Replace the passwords, the database
-- names (ho, relay, pos) and the table names with yours; run each section on
-- the server it names, as a superuser (or the tables' owner). Then every
-- `relaysync` command runs as these roles (tests/deployment.rs runs this
-- file so); nothing needs a superuser at run time. A `setup` these roles
-- cannot complete checks that first and creates nothing; its error names the
-- statement to run here. Connect over TLS: add
-- ?sslmode=verify-full&sslrootcert=/path/ca.crt to every URL, and use
-- hostssl lines in pg_hba.conf.

-- == HO ==
-- Reads the tables through a slot, owns its bookkeeping schema.
CREATE ROLE relaysync_ho LOGIN REPLICATION PASSWORD 'change-me';
GRANT CREATE ON DATABASE ho TO relaysync_ho;           -- schema relaysync
GRANT USAGE ON SCHEMA public TO relaysync_ho;
GRANT SELECT ON public.items, public.prices TO relaysync_ho;
-- CREATE PUBLICATION … FOR TABLE needs ownership of the tables, so the
-- tables' owner creates it; `setup ho` checks that it covers exactly the
-- [[tables]] (name it as [ho] publication). After adding or removing a
-- table, run ALTER PUBLICATION relaysync SET TABLE … the same way.
CREATE PUBLICATION relaysync FOR TABLE public.items, public.prices
  WITH (publish_via_partition_root = true);
-- pg_hba.conf must allow the role a replication connection to the database:
--   hostssl  ho  relaysync_ho  10.0.0.0/8  scram-sha-256

-- == relay ==
-- Owns the relay schema (`relaysync setup relay`), registers
-- the sites (`relaysync site add` creates each site's login role: CREATEROLE)
-- and is the role HO's worker reaches the relay with. The owner is not
-- subject to the relay's row-level security; keep its password at HO.
CREATE ROLE relaysync_relay LOGIN CREATEROLE PASSWORD 'change-me';
GRANT CREATE ON DATABASE relay TO relaysync_relay;
-- `setup relay` creates the group role relaysync_site (NOLOGIN) and the
-- policies that confine its members to their own site's packets, parts,
-- acks, requests and capture position. On PostgreSQL 16+, if relaysync_site
-- exists already (made by another relay database's owner), give this owner
-- the right to grant it:
--   GRANT relaysync_site TO relaysync_relay WITH ADMIN OPTION;
--
-- Each site: `relaysync site add store-001` creates the login role
-- relaysync_site_store_001, a member of relaysync_site, and prints its
-- generated password once (or takes it from --password-file). To make the
-- role yourself instead (no CREATEROLE needed for the owner then, but a
-- role with ADMIN OPTION on relaysync_site):
--   CREATE ROLE store_001_relay LOGIN PASSWORD 'change-me';
--   relaysync site add store-001 --role store_001_relay
-- A site role must not be a superuser, BYPASSRLS, or the relay's owner.
-- `relaysync site remove store-001` drops the role it created, or revokes
-- relaysync_site from a role it bound.
-- pg_hba.conf of the relay: TLS and a password for everyone, e.g.
--   hostssl relay all 0.0.0.0/0 scram-sha-256

-- == site ==
-- Writes the synced tables without firing their triggers.
CREATE ROLE relaysync_pos LOGIN PASSWORD 'change-me';
GRANT CREATE ON DATABASE pos TO relaysync_pos;         -- schema relaysync
GRANT TEMPORARY ON DATABASE pos TO relaysync_pos;      -- staging tables
GRANT USAGE ON SCHEMA public TO relaysync_pos;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.items, public.prices TO relaysync_pos;
-- Identity and serial columns: after applying HO's keys the site moves
-- their sequences past them.
GRANT SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO relaysync_pos;
-- Applying as a replica (no triggers, no FK checks) needs this (PostgreSQL 15+):
GRANT SET ON PARAMETER session_replication_role TO relaysync_pos;
-- (On PostgreSQL 14, run the site worker as a superuser instead.)
-- Schema changes at HO (an added column, a widened type) are made at the
-- site by its worker, which ALTER TABLE allows only to the tables' owner:
--   ALTER TABLE public.items OWNER TO relaysync_pos;
--   ALTER TABLE public.prices OWNER TO relaysync_pos;
-- Without it, each change holds the site until a role that may runs it
-- (`relaysync schema show --pos`, `relaysync schema apply`).

-- == site, with [[upstream]] ==
-- The site role captures its own upstream tables and marks what it applies
-- with a replication origin (so it is not captured back up). As at HO, the
-- tables' owner creates the publication (name it as [pos] publication;
-- its default is derived from the site code, see the README).
ALTER ROLE relaysync_pos REPLICATION;
GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text) TO relaysync_pos;
GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO relaysync_pos;
GRANT SELECT ON public.device_events, public.users TO relaysync_pos;
CREATE PUBLICATION relaysync_up FOR TABLE public.device_events, public.users
  WITH (publish_via_partition_root = true);

-- == HO, with [[upstream]] ==
-- The HO role merges into the upstream tables and marks its merges.
GRANT SELECT, INSERT, UPDATE, DELETE ON public.device_events, public.users TO relaysync_ho;
GRANT SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO relaysync_ho;
GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text) TO relaysync_ho;
GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO relaysync_ho;
GRANT SET ON PARAMETER session_replication_role TO relaysync_ho;
