-- A site's console shows its own tables' status (`status --site`, read
-- as the site's role): each site reads its own history of purged packets.
GRANT SELECT ON relay.table_history TO relaysync_site;
CREATE POLICY site_read ON relay.table_history FOR SELECT TO relaysync_site
    USING (site = relay.current_site());
