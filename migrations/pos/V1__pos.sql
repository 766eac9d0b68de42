-- A site's bookkeeping: which site this database is, how far it has applied,
-- and the packets it received.
CREATE TABLE relaysync.site (
    site            text PRIMARY KEY,
    applied_through bigint NOT NULL DEFAULT 0,
    last_sync_at    timestamptz,
    last_success_at timestamptz
);

CREATE TABLE relaysync.received_packets (
    packet_id  bigint PRIMARY KEY,
    group_id   bigint NOT NULL,
    kind       text NOT NULL,
    row_count  bigint NOT NULL,
    status     text NOT NULL CHECK (status IN ('PROCESSED', 'FAILED')),
    error      text,
    applied_at timestamptz NOT NULL DEFAULT now(),
    acked      boolean NOT NULL DEFAULT false
);
