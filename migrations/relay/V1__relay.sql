-- The relay database: packets from HO to the sites (and back), acknowledgements,
-- registered sites, the tables HO publishes, and the capture position.

CREATE TABLE relay.sites (
    code          text PRIMARY KEY,
    registered_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE relay.tables (
    name        text PRIMARY KEY,
    route       text NOT NULL,
    key_columns text[] NOT NULL,
    columns     jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE relay.packets (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    direction  text NOT NULL CHECK (direction IN ('down', 'up')),
    origin     text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('delta', 'snapshot')),
    group_id   bigint NOT NULL,
    lsn_from   pg_lsn,
    lsn_to     pg_lsn,
    targets    text[] NOT NULL,
    row_count  bigint NOT NULL,
    byte_count bigint NOT NULL,
    status     text NOT NULL DEFAULT 'UPLOADED' CHECK (status IN ('UPLOADED', 'PROCESSED', 'FAILED')),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX packets_direction_id ON relay.packets (direction, id);

CREATE TABLE relay.packet_parts (
    packet_id  bigint NOT NULL REFERENCES relay.packets ON DELETE CASCADE,
    seq        integer NOT NULL,
    table_name text NOT NULL,
    target     text NOT NULL,
    row_count  bigint NOT NULL,
    arrow_ipc  bytea NOT NULL,
    PRIMARY KEY (packet_id, seq)
);
-- Parts are zstd-compressed already: store them as they are.
ALTER TABLE relay.packet_parts ALTER COLUMN arrow_ipc SET STORAGE EXTERNAL;

CREATE TABLE relay.acks (
    packet_id bigint NOT NULL REFERENCES relay.packets ON DELETE CASCADE,
    site      text NOT NULL,
    status    text NOT NULL CHECK (status IN ('PROCESSED', 'FAILED')),
    rows      bigint NOT NULL DEFAULT 0,
    error     text,
    acked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (packet_id, site)
);

CREATE TABLE relay.capture_state (
    origin     text PRIMARY KEY,
    slot       text NOT NULL,
    lsn        pg_lsn NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
