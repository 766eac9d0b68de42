-- Per table: the last full sync this site applied, and its row count.
CREATE TABLE relaysync.table_sync (
    table_name     text PRIMARY KEY,
    last_full_sync timestamptz NOT NULL,
    rows           bigint NOT NULL,
    packet_group   bigint NOT NULL
);
