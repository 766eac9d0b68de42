-- Retention: packets every target processed are purged after [retention]
-- keep_acked; a site silent for max_offline is expired (it stops holding
-- packets back) and gets a full sync when it comes back.

-- What status still needs of a site once its acked packets are purged.
ALTER TABLE relay.sites
    ADD COLUMN applied_floor bigint,        -- highest packet it processed among the purged
    ADD COLUMN last_ack_floor timestamptz,  -- its last ack among the purged
    ADD COLUMN expired_at timestamptz,      -- set while expired
    ADD COLUMN rejoined_at timestamptz;     -- when it last came back from expiry

ALTER TABLE relay.sync_requests DROP CONSTRAINT sync_requests_reason_check;
ALTER TABLE relay.sync_requests ADD CONSTRAINT sync_requests_reason_check
    CHECK (reason IN ('first', 'push', 'resync', 'expired'));

-- The purge takes the oldest processed packets first.
CREATE INDEX packets_processed ON relay.packets (id) WHERE status = 'PROCESSED';
-- A site's acks by time (expiry, status).
CREATE INDEX acks_site ON relay.acks (site, acked_at);
