-- A packet's seal (src/seal.rs): the exact bytes its writer signed (a
-- header naming the key, the packet's id, group, origin, kind, targets and
-- each part's hash) and the Ed25519 signature over them. NULL: unsigned.
-- The relay only carries them; the side that applies a packet checks them.
ALTER TABLE relay.packets ADD COLUMN signed bytea, ADD COLUMN signature bytea;
