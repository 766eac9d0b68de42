-- `relaysync schema apply --site S` at HO: the change packet P holds at
-- site S is approved, and S makes it itself on its next sync (the
-- statements come from the site's own comparison of HO's signed shape with
-- its table, never from here). Read by each site for itself only.
CREATE TABLE relay.schema_approvals (
    site        text NOT NULL REFERENCES relay.sites (code) ON DELETE CASCADE,
    packet_id   bigint NOT NULL REFERENCES relay.packets (id) ON DELETE CASCADE,
    approved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, packet_id)
);
GRANT SELECT ON relay.schema_approvals TO relaysync_site;
ALTER TABLE relay.schema_approvals ENABLE ROW LEVEL SECURITY;
CREATE POLICY site_read ON relay.schema_approvals FOR SELECT TO relaysync_site
    USING (site = relay.current_site());
