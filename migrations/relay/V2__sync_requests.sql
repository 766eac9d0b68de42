-- Full-sync requests: a site's first contact, Sync Selective / Sync All
-- (`push`), and a site's clean resync. The HO worker serves them as
-- snapshot groups.
CREATE TABLE relay.sync_requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text NOT NULL REFERENCES relay.sites ON DELETE CASCADE,
    tables       text[],          -- NULL: every configured table
    reason       text NOT NULL CHECK (reason IN ('first', 'push', 'resync')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    served_at    timestamptz,
    group_id     bigint           -- the snapshot group that served it
);
CREATE INDEX sync_requests_pending ON relay.sync_requests (id) WHERE served_at IS NULL;

-- Sites registered before full sync existed have had their first contact.
INSERT INTO relay.sync_requests (site, reason, served_at)
SELECT code, 'first', now() FROM relay.sites;
