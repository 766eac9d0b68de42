-- Each leaf partition of a synced partitioned table, as HO's worker last
-- saw it. PostgreSQL publishes no change when a partition of a table
-- published via its root is truncated, detached or dropped; a truncated
-- one has a new relfilenode, the others are gone: either way, the worker
-- has every site reload the table.
CREATE TABLE relaysync.partitions (
    root        text NOT NULL,
    partition   oid NOT NULL,
    relfilenode oid NOT NULL,
    PRIMARY KEY (root, partition)
);
