-- A site that holds a packet for a schema change it does not make by
-- itself acks it HELD, with the change as SQL in `error`. HELD moves on to
-- PROCESSED once the site's table is changed (or FAILED, or HELD again);
-- the packet stays UPLOADED meanwhile.
ALTER TABLE relay.acks DROP CONSTRAINT acks_status_check;
ALTER TABLE relay.acks ADD CONSTRAINT acks_status_check
    CHECK (status IN ('PROCESSED', 'FAILED', 'HELD'));

CREATE OR REPLACE FUNCTION relay.ack_moves() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.status IN ('FAILED', 'HELD') AND coalesce(NEW.error, '') = '' THEN
        RAISE EXCEPTION 'an ack % must carry its error (packet %, site %)', NEW.status, NEW.packet_id, NEW.site
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

CREATE INDEX acks_site_held ON relay.acks (site, packet_id) WHERE status = 'HELD';
