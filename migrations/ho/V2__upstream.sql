-- Site data merged into HO: how far HO applied the up packets, the event
-- log, and the rows HO could not store.
CREATE TABLE relaysync.up_state (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    applied_through bigint NOT NULL DEFAULT 0
);
INSERT INTO relaysync.up_state DEFAULT VALUES;

CREATE TABLE relaysync.event_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    site       text,
    table_name text NOT NULL,
    key        text NOT NULL,
    event      text NOT NULL,
    detail     text
);
CREATE INDEX event_log_at ON relaysync.event_log (at);

CREATE TABLE relaysync.rejects (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    site       text NOT NULL,
    packet_id  bigint NOT NULL,
    table_name text NOT NULL,
    key        text NOT NULL,
    row_data   jsonb NOT NULL,
    error      text NOT NULL
);
