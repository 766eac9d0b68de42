-- verify: HO's per-table hashes sent in the stream, compared by each site.

ALTER TABLE relay.packets DROP CONSTRAINT packets_kind_check;
ALTER TABLE relay.packets ADD CONSTRAINT packets_kind_check
    CHECK (kind IN ('delta', 'snapshot', 'verify'));

-- `relaysync verify` asks; HO serves each request with a verify packet.
CREATE TABLE relay.verify_requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site         text NOT NULL REFERENCES relay.sites (code) ON DELETE CASCADE,
    tables       text[],
    requested_at timestamptz NOT NULL DEFAULT now(),
    served_at    timestamptz,
    packet_id    bigint
);

-- HO's hashes of a verify packet: per table and bucket of keys, the rows and
-- the sum of their hashes; `site` is `*` for a table every site holds whole.
CREATE TABLE relay.verify_expected (
    packet_id  bigint NOT NULL REFERENCES relay.packets (id) ON DELETE CASCADE,
    site       text NOT NULL,
    table_name text NOT NULL,
    bucket     int NOT NULL,
    rows       bigint NOT NULL,
    hash       numeric NOT NULL,
    PRIMARY KEY (packet_id, site, table_name, bucket)
);

-- What each site found when it applied a verify packet.
CREATE TABLE relay.verify_results (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    packet_id  bigint NOT NULL,
    site       text NOT NULL REFERENCES relay.sites (code) ON DELETE CASCADE,
    table_name text NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now(),
    status     text NOT NULL CHECK (status IN ('equal', 'drift')),
    ho_rows    bigint NOT NULL,
    site_rows  bigint NOT NULL,
    detail     text NOT NULL DEFAULT '',
    ho_logged  boolean NOT NULL DEFAULT false,
    UNIQUE (packet_id, site, table_name)
);
CREATE INDEX verify_results_site ON relay.verify_results (site, table_name, id);

ALTER TABLE relay.verify_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE relay.verify_expected ENABLE ROW LEVEL SECURITY;
ALTER TABLE relay.verify_results ENABLE ROW LEVEL SECURITY;

-- A site reads HO's hashes for it (or for every site) and writes its own results.
GRANT SELECT ON relay.verify_expected TO relaysync_site;
GRANT SELECT, INSERT (packet_id, site, table_name, status, ho_rows, site_rows, detail)
    ON relay.verify_results TO relaysync_site;
CREATE POLICY site_read ON relay.verify_expected FOR SELECT TO relaysync_site
    USING (site = relay.current_site() OR site = '*');
CREATE POLICY site_read ON relay.verify_results FOR SELECT TO relaysync_site
    USING (site = relay.current_site());
CREATE POLICY site_report ON relay.verify_results FOR INSERT TO relaysync_site
    WITH CHECK (site = relay.current_site()
                AND EXISTS (SELECT 1 FROM relay.packets p WHERE p.id = packet_id
                              AND p.kind = 'verify' AND relay.current_site() = ANY (p.targets)));
