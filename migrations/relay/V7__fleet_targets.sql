-- Fleet scale: a down packet for every site lists no sites. Its targets are
-- '{*}' and target_count holds how many sites it was for (the active sites
-- when it was written); a site is a target of such a packet when the
-- packet's id is above the site's first_packet (the last packet id handed
-- out when it registered or came back from expiry) and it is not expired.
-- Expiry and `site remove` count the site out of the `*` packets it has
-- not acked. A packet with listed targets keeps target_count NULL.

ALTER TABLE relay.packets ADD COLUMN target_count integer;
ALTER TABLE relay.sites ADD COLUMN first_packet bigint NOT NULL DEFAULT 0;

-- The last packet id handed out (0 before the first).
CREATE FUNCTION relay.last_packet_id() RETURNS bigint
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM relay.packets_id_seq $$;
REVOKE ALL ON FUNCTION relay.last_packet_id() FROM PUBLIC;

-- Whether the calling site's role is a target of a down packet.
CREATE FUNCTION relay.is_target(targets text[], id bigint) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT EXISTS (SELECT 1 FROM relay.sites s
                          WHERE s.role = current_user
                            AND (s.code = ANY (targets)
                                 OR (targets = '{*}' AND id > s.first_packet AND s.expired_at IS NULL))) $$;
GRANT EXECUTE ON FUNCTION relay.is_target(text[], bigint) TO relaysync_site;

DROP POLICY site_read ON relay.packets;
CREATE POLICY site_read ON relay.packets FOR SELECT TO relaysync_site
    USING (CASE direction WHEN 'down' THEN relay.is_target(targets, id)
                          ELSE origin = relay.current_site() END);

DROP POLICY site_ack ON relay.acks;
CREATE POLICY site_ack ON relay.acks FOR INSERT TO relaysync_site
    WITH CHECK (site = relay.current_site()
                AND EXISTS (SELECT 1 FROM relay.packets p WHERE p.id = packet_id
                              AND p.direction = 'down' AND relay.is_target(p.targets, p.id)));


-- HO's record reads only what changed: each down packet carries the id of
-- the transaction that last wrote it (its insert, a settle), and HO asks
-- for those from transactions at or after the oldest one running when it
-- last read (pg_snapshot_xmin): every earlier one was visible then.
ALTER TABLE relay.packets ADD COLUMN changed xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX packets_changed ON relay.packets (changed) WHERE direction = 'down';
-- The `*` packets after a site's position (fetch, status).
CREATE INDEX packets_all_sites ON relay.packets (id) WHERE direction = 'down' AND targets = '{*}';
-- Packets listing a site (fetch, status); a site's last processed packet.
CREATE INDEX packets_targets ON relay.packets USING gin (targets);
CREATE INDEX acks_site_processed ON relay.acks (site, packet_id) WHERE status = 'PROCESSED';
CREATE INDEX acks_site_failed ON relay.acks (site, packet_id) WHERE status = 'FAILED';
CREATE INDEX sync_requests_site ON relay.sync_requests (site);

-- As in V4, with target_count for `*` packets, marking what changed.
CREATE OR REPLACE FUNCTION relay.settle(ids bigint[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    PERFORM 1 FROM relay.packets WHERE id = ANY (ids) ORDER BY id FOR NO KEY UPDATE;
    UPDATE relay.packets p SET changed = pg_current_xact_id(), status = CASE
        WHEN EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id AND a.status = 'FAILED')
            THEN 'FAILED'
        WHEN (SELECT count(*) FROM relay.acks a WHERE a.packet_id = p.id AND a.status = 'PROCESSED')
             >= coalesce(p.target_count, cardinality(p.targets))
            THEN 'PROCESSED'
        ELSE 'UPLOADED' END
     WHERE p.id = ANY (ids);
END $$;
