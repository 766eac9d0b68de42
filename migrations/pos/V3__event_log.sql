-- Events at this site, e.g. `User update succeeded (HO)` for each row HO
-- merged from a site that came back down.
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
