-- A schema change at HO the site does not make by itself (a dropped or
-- retyped column, a new key, or any change under `schema = "hold"`) holds
-- the packet that carries it: status HELD, with the statements that make
-- the site's table like HO's (`relaysync schema apply` runs them).
ALTER TABLE relaysync.received_packets DROP CONSTRAINT received_packets_status_check;
ALTER TABLE relaysync.received_packets ADD CONSTRAINT received_packets_status_check
    CHECK (status IN ('PROCESSED', 'FAILED', 'HELD'));
ALTER TABLE relaysync.received_packets ADD COLUMN schema_sql text;

-- Each synced table's shape as HO last sent it (columns with type and
-- nullability, key), written in the transaction that applies it: a column
-- HO dropped or retyped is told from a column the site keeps of its own.
CREATE TABLE relaysync.shapes (
    table_name text PRIMARY KEY,
    columns    jsonb NOT NULL,
    key        text[] NOT NULL
);
