-- Run once as a superuser on the HO server, then restart PostgreSQL.
-- relaysync reads HO's changes through logical replication.
ALTER SYSTEM SET wal_level = 'logical';
-- One slot and one WAL sender per relaysync HO worker, plus what else you use.
ALTER SYSTEM SET max_replication_slots = 10;
ALTER SYSTEM SET max_wal_senders = 10;
-- Keep at most this much WAL for a slot whose worker is down, so a long outage
-- cannot fill the disk (the slot is invalidated past it; then full-sync the sites).
ALTER SYSTEM SET max_slot_wal_keep_size = '50GB';
-- After the restart: SHOW wal_level;  -- logical
