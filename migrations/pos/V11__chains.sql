-- The last signed packet this site applied in each chain it follows (its
-- own and HO's packets for every site): written in the transaction that
-- applies the packet, so a packet withheld or replayed by the relay is
-- seen (see relay.chains).
CREATE TABLE relaysync.chains (
    origin text NOT NULL,
    target text NOT NULL,
    seq    bigint NOT NULL,
    hash   bytea NOT NULL,
    PRIMARY KEY (origin, target)
);
