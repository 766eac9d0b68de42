-- A site's fetch through an index: a row per (site, down packet listing
-- it), so a site behind other sites' packets reads its own and not theirs.
-- A trigger keeps it equal to the packets' targets as packets are written
-- and as sites leave them (removal, expiry); the `*` packets are found
-- through packets_all_sites (V7).
CREATE TABLE relay.packet_targets (
    site      text   NOT NULL,
    packet_id bigint NOT NULL REFERENCES relay.packets (id) ON DELETE CASCADE,
    PRIMARY KEY (site, packet_id)
);
CREATE INDEX packet_targets_packet ON relay.packet_targets (packet_id);

INSERT INTO relay.packet_targets (site, packet_id)
    SELECT DISTINCT t, p.id FROM relay.packets p, unnest(p.targets) t
     WHERE p.direction = 'down' AND p.targets <> '{*}';

CREATE FUNCTION relay.keep_packet_targets() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM relay.packet_targets
         WHERE packet_id = NEW.id AND site <> ALL (NEW.targets);
    END IF;
    IF NEW.targets <> '{*}' THEN
        INSERT INTO relay.packet_targets (site, packet_id)
        SELECT DISTINCT t, NEW.id FROM unnest(NEW.targets) t
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION relay.keep_packet_targets() FROM PUBLIC;
CREATE TRIGGER packet_targets AFTER INSERT OR UPDATE OF targets ON relay.packets
    FOR EACH ROW WHEN (NEW.direction = 'down') EXECUTE FUNCTION relay.keep_packet_targets();

ALTER TABLE relay.packet_targets ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON relay.packet_targets TO relaysync_site;
CREATE POLICY site_read ON relay.packet_targets FOR SELECT TO relaysync_site
    USING (site = relay.current_site());
