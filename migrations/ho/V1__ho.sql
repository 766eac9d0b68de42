-- HO's own record of the packets it sent, with the status the sites acked.
CREATE TABLE relaysync.sent_packets (
    packet_id  bigint PRIMARY KEY,
    group_id   bigint NOT NULL,
    kind       text NOT NULL,
    targets    text[] NOT NULL,
    row_count  bigint NOT NULL,
    byte_count bigint NOT NULL,
    created_at timestamptz NOT NULL,
    status     text NOT NULL,
    error      text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
