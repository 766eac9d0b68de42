-- Each site's Ed25519 public key(s) (`relaysync site key`): with `[ho]
-- signing_key` set, HO merges only uploads signed by one of its site's
-- keys. Kept at HO, not in the relay: the relay carries packets, it does
-- not say whose they are.
CREATE TABLE relaysync.site_keys (
    site       text NOT NULL,
    key_id     text NOT NULL,
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, key_id)
);

-- The last signed upload HO merged from each site (see relay.chains),
-- written in the merge's transaction.
CREATE TABLE relaysync.chains (
    origin text NOT NULL,
    target text NOT NULL,
    seq    bigint NOT NULL,
    hash   bytea NOT NULL,
    PRIMARY KEY (origin, target)
);
