-- A packet's seal (src/seal.rs): the exact bytes its writer signed (a
-- header naming the key, the packet's id, group, origin, kind, targets and
-- each part's hash) and the Ed25519 signature over them. NULL: unsigned.
-- The relay only carries them; the side that applies a packet checks them.
ALTER TABLE relay.packets ADD COLUMN signed bytea, ADD COLUMN signature bytea;

-- The head of each chain of signed packets: per writer (`ho`, or a site
-- for its uploads) and target (a site, `*`, or `ho`), the number of the
-- last packet sealed for it and the SHA-256 of its signed bytes. Each
-- packet names its number and its predecessor's hash for each of its
-- targets, so the side that applies it sees a packet withheld, dropped or
-- replayed. A writer reads and moves its heads under the direction's lock;
-- a head the relay alters only makes the next packets refused.
CREATE TABLE relay.chains (
    origin text NOT NULL,
    target text NOT NULL,
    seq    bigint NOT NULL,
    hash   bytea NOT NULL,
    PRIMARY KEY (origin, target)
);
ALTER TABLE relay.chains ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE (seq, hash) ON relay.chains TO relaysync_site;
CREATE POLICY site_own ON relay.chains TO relaysync_site
    USING (origin = relay.current_site()) WITH CHECK (origin = relay.current_site());
