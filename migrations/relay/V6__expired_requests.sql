-- An expired site asks for its full sync itself when it comes back
-- (reason 'expired'), as it may ask for a resync.
DROP POLICY site_resync ON relay.sync_requests;
CREATE POLICY site_resync ON relay.sync_requests FOR INSERT TO relaysync_site
    WITH CHECK (site = relay.current_site() AND reason IN ('resync', 'expired'));
