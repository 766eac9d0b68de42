-- An ack moves UPLOADED (no ack yet) -> PROCESSED | FAILED, and FAILED ->
-- PROCESSED (the retry that succeeded) or FAILED again (with the new
-- error). PROCESSED is final; FAILED always carries its error. Enforced
-- for every writer: a site's role may re-ack its own packets (a retry),
-- not rewrite what it already processed.
CREATE FUNCTION relay.ack_moves() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.status = 'FAILED' AND coalesce(NEW.error, '') = '' THEN
        RAISE EXCEPTION 'an ack FAILED must carry its error (packet %, site %)', NEW.packet_id, NEW.site
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.packet_id <> OLD.packet_id OR NEW.site <> OLD.site THEN
            RAISE EXCEPTION 'an ack stays the ack of its packet and site (packet %, site %)',
                OLD.packet_id, OLD.site USING ERRCODE = 'check_violation';
        END IF;
        IF OLD.status = 'PROCESSED' AND (NEW.status <> 'PROCESSED' OR NEW.rows <> OLD.rows
                                         OR NEW.error IS DISTINCT FROM OLD.error) THEN
            RAISE EXCEPTION 'packet % was acked PROCESSED by site %; that ack is final', OLD.packet_id, OLD.site
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ack_moves BEFORE INSERT OR UPDATE ON relay.acks
    FOR EACH ROW EXECUTE FUNCTION relay.ack_moves();

-- HO's hashes for every site (`*`) of a verify run are read only by the
-- sites that run is for (the verify packets each may read), not by every
-- site of the relay.
DROP POLICY site_read ON relay.verify_expected;
CREATE POLICY site_read ON relay.verify_expected FOR SELECT TO relaysync_site
    USING (site = relay.current_site()
           OR (site = '*' AND EXISTS (SELECT 1 FROM relay.packets p WHERE p.id = packet_id
                                        AND p.kind = 'verify' AND relay.current_site() = ANY (p.targets))));
