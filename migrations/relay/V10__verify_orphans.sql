-- A site's verify also counts, per table, its rows whose referenced row
-- (through the site's own foreign keys to other synced tables) it does not
-- hold: orphans, which a routing not closed under the foreign keys leaves.
ALTER TABLE relay.verify_results ADD COLUMN orphans bigint NOT NULL DEFAULT 0;
GRANT INSERT (orphans) ON relay.verify_results TO relaysync_site;

-- A site's doctor checks that the relay schema is current: the versions
-- applied (names and checksums of relaysync's own migrations, nothing of
-- any site).
GRANT SELECT ON relay.schema_history TO relaysync_site;
