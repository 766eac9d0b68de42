-- Per site and table, what `status --site` needs of packets purged since:
-- the latest full sync the site applied (its group, when it was written,
-- and its parts' rows as counted, summed over the purges that took it) and
-- the latest delta with the table it applied. Written by the purge, in the
-- statement that removes the packets.
CREATE TABLE relay.table_history (
    site          text NOT NULL REFERENCES relay.sites (code) ON DELETE CASCADE,
    table_name    text NOT NULL,
    full_group    bigint,
    full_at       timestamptz,
    full_raw_rows bigint,
    last_delta    bigint,
    PRIMARY KEY (site, table_name)
);

-- Sites have no policy here: only the relay's owner reads and writes it.
ALTER TABLE relay.table_history ENABLE ROW LEVEL SECURITY;

-- HO has every site reload a table whose partition was truncated, detached
-- or dropped (PostgreSQL publishes none of those for a table published via
-- its root).
ALTER TABLE relay.sync_requests DROP CONSTRAINT sync_requests_reason_check;
ALTER TABLE relay.sync_requests ADD CONSTRAINT sync_requests_reason_check
    CHECK (reason IN ('first', 'push', 'resync', 'expired', 'truncated'));

-- Where HO's sequences behind the synced tables' columns stand (HO's worker
-- writes them): each site moves its own sequence of the column past them,
-- so that a key a site makes is not one HO used for another site's row (a
-- site holds only its own rows of a table routed by column).
CREATE TABLE relay.key_highs (
    table_name  text NOT NULL,
    column_name text NOT NULL,
    high        bigint NOT NULL,
    PRIMARY KEY (table_name, column_name)
);
ALTER TABLE relay.key_highs ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON relay.key_highs TO relaysync_site;
CREATE POLICY site_read ON relay.key_highs FOR SELECT TO relaysync_site USING (true);
