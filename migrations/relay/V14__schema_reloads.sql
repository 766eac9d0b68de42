-- A column added at HO whose values PostgreSQL wrote into the rows (a
-- volatile default, an identity) is not in the stream: HO's worker has
-- every active site reload the table (reason 'schema').
ALTER TABLE relay.sync_requests DROP CONSTRAINT sync_requests_reason_check;
ALTER TABLE relay.sync_requests ADD CONSTRAINT sync_requests_reason_check
    CHECK (reason IN ('first', 'push', 'resync', 'expired', 'truncated', 'schema'));
