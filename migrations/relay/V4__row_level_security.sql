-- Row-level security: each site reaches the relay with a role of its own
-- (`relaysync site add` creates or binds it), a member of relaysync_site.
-- PostgreSQL lets that role read only the packets and parts meant for its
-- site, write acks only as itself and for packets it is a target of, and
-- upload only as itself. The relay's owner (setup relay, site add, HO's
-- worker) is not subject to these policies.

ALTER TABLE relay.sites
    ADD COLUMN role text UNIQUE,                          -- the site's relay login
    ADD COLUMN role_created boolean NOT NULL DEFAULT false; -- made by `site add` (dropped by `site remove`)

-- Shared by every relay database of the server; two setups at once may
-- race to create it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'relaysync_site') THEN
        CREATE ROLE relaysync_site NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

-- The site of the role running the query (NULL for any other role).
CREATE FUNCTION relay.current_site() RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT code FROM relay.sites WHERE role = current_user $$;

-- Whether `grp` is a group of up packets uploaded by the calling site (its
-- login role: inside this function current_user is the owner): an upload
-- may join only its own site's group (a policy of relay.packets cannot
-- read relay.packets itself).
CREATE FUNCTION relay.is_own_up_group(grp bigint) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM relay.packets p JOIN relay.sites s ON s.code = p.origin
                          WHERE p.id = grp AND p.direction = 'up' AND s.role = session_user) $$;

-- A packet's status from its acks: PROCESSED once every target acked it,
-- FAILED while any target failed it. Run after writing acks, by whoever
-- wrote them (a site cannot update packets). The lock, taken before the
-- update's own snapshot, makes concurrent acks of one packet take turns,
-- so the last one sees every other. It is FOR NO KEY UPDATE: each ack's
-- foreign key holds a KEY SHARE lock on its packet until commit, which
-- FOR UPDATE would wait for (two sites acking one packet would deadlock).
CREATE FUNCTION relay.settle(ids bigint[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM 1 FROM relay.packets WHERE id = ANY (ids) ORDER BY id FOR NO KEY UPDATE;
    UPDATE relay.packets p SET status = CASE
        WHEN EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id AND a.status = 'FAILED')
            THEN 'FAILED'
        WHEN (SELECT count(*) FROM relay.acks a WHERE a.packet_id = p.id AND a.status = 'PROCESSED')
             >= cardinality(p.targets)
            THEN 'PROCESSED'
        ELSE 'UPLOADED' END
     WHERE p.id = ANY (ids);
END $$;

REVOKE ALL ON FUNCTION relay.is_own_up_group(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION relay.settle(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION relay.current_site(), relay.is_own_up_group(bigint),
    relay.settle(bigint[]) TO relaysync_site;

GRANT USAGE ON SCHEMA relay TO relaysync_site;
GRANT SELECT ON relay.sites, relay.tables, relay.packets, relay.packet_parts, relay.acks,
    relay.sync_requests, relay.capture_state TO relaysync_site;
GRANT INSERT ON relay.packets, relay.packet_parts, relay.acks, relay.capture_state
    TO relaysync_site;
GRANT INSERT (site, tables, reason) ON relay.sync_requests TO relaysync_site;
GRANT UPDATE (status, rows, error, acked_at) ON relay.acks TO relaysync_site;
GRANT UPDATE (slot, lsn, updated_at) ON relay.capture_state TO relaysync_site;
GRANT USAGE ON SEQUENCE relay.packets_id_seq TO relaysync_site;

ALTER TABLE relay.sites ENABLE ROW LEVEL SECURITY;
ALTER TABLE relay.packets ENABLE ROW LEVEL SECURITY;
ALTER TABLE relay.packet_parts ENABLE ROW LEVEL SECURITY;
ALTER TABLE relay.acks ENABLE ROW LEVEL SECURITY;
ALTER TABLE relay.sync_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE relay.capture_state ENABLE ROW LEVEL SECURITY;

CREATE POLICY site_self ON relay.sites FOR SELECT TO relaysync_site
    USING (role = current_user);

-- Down packets it is a target of; its own up packets.
CREATE POLICY site_read ON relay.packets FOR SELECT TO relaysync_site
    USING (CASE direction WHEN 'down' THEN relay.current_site() = ANY (targets)
                          ELSE origin = relay.current_site() END);
-- Up packets as itself, for HO, with the id the sequence just gave (ids
-- order the readers), in a group of its own.
CREATE POLICY site_upload ON relay.packets FOR INSERT TO relaysync_site
    WITH CHECK (direction = 'up' AND origin = relay.current_site() AND targets = ARRAY['ho']
                AND status = 'UPLOADED' AND id = currval('relay.packets_id_seq')
                AND (group_id = id OR relay.is_own_up_group(group_id)));

-- Parts for itself or every site, of packets it may read.
CREATE POLICY site_read ON relay.packet_parts FOR SELECT TO relaysync_site
    USING (target IN (relay.current_site(), '*')
           AND EXISTS (SELECT 1 FROM relay.packets p WHERE p.id = packet_id));
CREATE POLICY site_upload ON relay.packet_parts FOR INSERT TO relaysync_site
    WITH CHECK (EXISTS (SELECT 1 FROM relay.packets p WHERE p.id = packet_id
                          AND p.direction = 'up' AND p.origin = relay.current_site()));

-- Its own acks, for down packets it is a target of.
CREATE POLICY site_read ON relay.acks FOR SELECT TO relaysync_site
    USING (site = relay.current_site());
CREATE POLICY site_ack ON relay.acks FOR INSERT TO relaysync_site
    WITH CHECK (site = relay.current_site()
                AND EXISTS (SELECT 1 FROM relay.packets p WHERE p.id = packet_id
                              AND p.direction = 'down' AND relay.current_site() = ANY (p.targets)));
CREATE POLICY site_reack ON relay.acks FOR UPDATE TO relaysync_site
    USING (site = relay.current_site()) WITH CHECK (site = relay.current_site());

-- Its own full-sync requests; it may ask for a resync.
CREATE POLICY site_read ON relay.sync_requests FOR SELECT TO relaysync_site
    USING (site = relay.current_site());
CREATE POLICY site_resync ON relay.sync_requests FOR INSERT TO relaysync_site
    WITH CHECK (site = relay.current_site() AND reason = 'resync');

-- The position of its own upstream capture.
CREATE POLICY site_own ON relay.capture_state TO relaysync_site
    USING (origin = relay.current_site()) WITH CHECK (origin = relay.current_site());

