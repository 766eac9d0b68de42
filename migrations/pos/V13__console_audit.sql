-- What console users did: who, what, when.
CREATE TABLE relaysync.console_audit (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    by_user text NOT NULL,
    action  text NOT NULL,
    detail  text NOT NULL DEFAULT ''
);
