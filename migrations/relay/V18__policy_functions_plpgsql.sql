-- The policies' functions in PL/pgSQL: same results, but a session plans
-- their queries once, where a SQL function's query is planned again in
-- every statement that calls it (each listing and fetch of a site: half
-- the relay's time for a small packet under row-level security).
CREATE OR REPLACE FUNCTION relay.current_site() RETURNS text
    LANGUAGE plpgsql STABLE
    AS $$ BEGIN RETURN (SELECT code FROM relay.sites WHERE role = current_user); END $$;

CREATE OR REPLACE FUNCTION relay.is_target(targets text[], id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE
    AS $$ BEGIN
        RETURN EXISTS (SELECT 1 FROM relay.sites s
                        WHERE s.role = current_user
                          AND (s.code = ANY (targets)
                               OR (targets = '{*}' AND id > s.first_packet AND s.expired_at IS NULL)));
    END $$;
