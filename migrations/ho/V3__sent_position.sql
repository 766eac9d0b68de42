-- How far HO's record has read the relay's packet changes: the oldest
-- relay transaction running at its last reading (see relay V7).
CREATE TABLE relaysync.sent_position (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    relay_xmin bigint NOT NULL DEFAULT 0
);
INSERT INTO relaysync.sent_position DEFAULT VALUES;
