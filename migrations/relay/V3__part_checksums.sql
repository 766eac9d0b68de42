-- Each part's SHA-256, computed by its writer from the bytes it encoded:
-- a reader applies a part only when its bytes hash to it and it holds
-- row_count rows (`sha256(arrow_ipc) = checksum` checks it in SQL).
ALTER TABLE relay.packet_parts ADD COLUMN checksum bytea;
UPDATE relay.packet_parts SET checksum = sha256(arrow_ipc);
ALTER TABLE relay.packet_parts ALTER COLUMN checksum SET NOT NULL;
