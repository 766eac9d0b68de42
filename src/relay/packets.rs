//! Packets and their parts: writing them (HO's capture and full syncs, a
//! site's upload) and reading them in order (a site's apply, HO's merge).

use std::time::SystemTime;

use tokio_postgres::types::Type;
use tokio_postgres::Row;

use super::{get, Relay};
use crate::error::{DbContext, Result};
use crate::protocol::sql::*;
use crate::protocol::{Direction, Lsn, Origin, PacketKind, PacketStatus, Target};

/// A packet as the relay lists it (without its parts).
#[derive(Debug, Clone)]
pub(crate) struct PacketInfo {
    pub(crate) id: i64,
    /// HO, or the site an up packet comes from.
    pub(crate) origin: Origin,
    pub(crate) group_id: i64,
    pub(crate) kind: PacketKind,
    pub(crate) row_count: i64,
    pub(crate) byte_count: i64,
    pub(crate) targets: Vec<String>,
    pub(crate) status: PacketStatus,
    pub(crate) created_at: SystemTime,
    /// The bytes its writer signed and the signature (see `seal`), if signed.
    pub(crate) signed: Option<Vec<u8>>,
    pub(crate) signature: Option<Vec<u8>>,
}

const PACKET_COLUMNS: &str =
    "p.id, p.origin, p.group_id, p.kind, p.row_count, p.byte_count, p.targets, p.status, p.created_at,
     p.signed, p.signature";

/// Whether packet `p` is for target `$2` (a site, or `ho`): listed in its
/// targets, or a `*` packet written since the site registered or came back
/// from expiry (see migrations/relay/V7).
fn for_target() -> String {
    format!(
        "($2 = ANY(p.targets)
      OR (p.targets = {ALL_ARRAY} AND EXISTS (SELECT 1 FROM relay.sites s WHERE s.code = $2
            AND p.id > s.first_packet AND s.expired_at IS NULL)))"
    )
}

/// The ids of site `site`'s down packets (`site` a placeholder), found by
/// key rather than on a walk of the packets: those listing it
/// (relay.packet_targets, V17) and the `*` packets since it joined. With
/// `after` = (position, limit) placeholders, only those after its position,
/// at most `limit` of each kind. A site that is expired (or not
/// registered) is a target of no `*` packet: the bound is NULL.
pub(super) fn site_packet_ids(site: &str, after: Option<(&str, &str)>) -> String {
    let (listed_after, since, limit) = match after {
        // The row comparison takes the (site, packet_id) key whatever the
        // statistics say.
        Some((position, limit)) => (
            format!(" AND (t.site, t.packet_id) > ({site}, {position})"),
            format!("greatest({position}, s.first_packet)"),
            format!(" LIMIT {limit}"),
        ),
        None => (String::new(), "s.first_packet".to_string(), String::new()),
    };
    format!(
        "ARRAY(
           (SELECT t.packet_id FROM relay.packet_targets t
             WHERE t.site = {site}{listed_after}
             ORDER BY t.site, t.packet_id{limit})
           UNION ALL
           (SELECT q.id FROM relay.packets q
             WHERE q.direction = {DOWN} AND q.targets = {ALL_ARRAY}
               AND q.id > (SELECT {since} FROM relay.sites s
                            WHERE s.code = {site} AND s.expired_at IS NULL)
             ORDER BY q.id{limit}))"
    )
}

impl PacketInfo {
    fn from_row(row: &Row) -> Result<PacketInfo> {
        let t = "relay.packets";
        Ok(PacketInfo {
            id: get(row, "id", t)?,
            origin: get(row, "origin", t)?,
            group_id: get(row, "group_id", t)?,
            kind: get(row, "kind", t)?,
            row_count: get(row, "row_count", t)?,
            byte_count: get(row, "byte_count", t)?,
            targets: get(row, "targets", t)?,
            status: get(row, "status", t)?,
            created_at: get(row, "created_at", t)?,
            signed: get(row, "signed", t)?,
            signature: get(row, "signature", t)?,
        })
    }

    fn from_rows(rows: &[Row]) -> Result<Vec<PacketInfo>> {
        rows.iter().map(PacketInfo::from_row).collect()
    }
}

/// A down packet for HO's record of what it sent, with the sites' errors.
#[derive(Debug, Clone)]
pub(crate) struct SentPacket {
    pub(crate) packet: PacketInfo,
    /// `site: error; …` for the sites that failed it.
    pub(crate) error: Option<String>,
}

/// One part of a packet as stored.
#[derive(Debug)]
pub(crate) struct StoredPart {
    pub(crate) packet_id: i64,
    /// Its place in the packet.
    pub(crate) seq: i32,
    pub(crate) table_name: String,
    /// The site it is for, or `*` (or `ho`).
    pub(crate) target: String,
    pub(crate) row_count: i64,
    pub(crate) arrow_ipc: Vec<u8>,
    /// SHA-256 of `arrow_ipc` as its writer encoded it.
    pub(crate) checksum: Vec<u8>,
}

impl StoredPart {
    fn from_row(row: Row) -> Result<StoredPart> {
        let t = "relay.packet_parts";
        Ok(StoredPart {
            packet_id: get(&row, "packet_id", t)?,
            seq: get(&row, "seq", t)?,
            table_name: get(&row, "table_name", t)?,
            target: get(&row, "target", t)?,
            row_count: get(&row, "row_count", t)?,
            arrow_ipc: get(&row, "arrow_ipc", t)?,
            checksum: get(&row, "checksum", t)?,
        })
    }

    /// Why the part is not the one its writer stored (its bytes do not hash
    /// to its checksum, or it holds another number of rows than
    /// `row_count`), or None.
    pub(crate) fn damage(&self, rows: usize) -> Option<String> {
        if checksum(&self.arrow_ipc) != self.checksum {
            return Some("its bytes do not match the checksum written with them".into());
        }
        if i64::try_from(rows).ok() != Some(self.row_count) {
            return Some(format!(
                "it holds {rows} row(s) where the relay says {}",
                self.row_count
            ));
        }
        None
    }
}

/// The checksum stored with a part: SHA-256 of its bytes.
pub(crate) fn checksum(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// The lock a direction's writers take until their commit (packets commit
/// in id order, see `insert_packet`); `$1` is the direction.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('relay.packets ' || $1))";
/// The next packet id.
const NEXT_ID: &str = "nextval(pg_get_serial_sequence('relay.packets', 'id'))";

/// Which packets to list.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// The first `limit` after packet `after`.
    After { after: i64, limit: i64 },
    /// Every packet of a group.
    Group(i64),
}

/// A new packet's row in `relay.packets`.
#[derive(Debug)]
pub(crate) struct NewPacket<'a> {
    pub(crate) origin: &'a Origin,
    pub(crate) kind: PacketKind,
    /// The group the packet joins; None starts one.
    pub(crate) group_id: Option<i64>,
    pub(crate) lsn_from: Lsn,
    pub(crate) lsn_to: Lsn,
    pub(crate) targets: &'a [String],
    /// For targets `*`: how many sites the packet is for.
    pub(crate) target_count: Option<i32>,
    pub(crate) row_count: i64,
    pub(crate) byte_count: i64,
    /// The id taken by [`next_signed`](super::RelayTx::next_signed) for a
    /// packet signed before it is stored; None takes the next.
    pub(crate) id: Option<i64>,
    /// The signed bytes and the signature, when signed.
    pub(crate) seal: Option<(Vec<u8>, Vec<u8>)>,
    /// The chain heads this packet moves (target, new head), when signed.
    pub(crate) heads: Vec<(String, crate::seal::Head)>,
}

impl super::RelayTx<'_> {
    /// Inserts a packet row and returns its id; a packet without a group
    /// starts one (its group id is its own id).
    ///
    /// Readers take packets by `id > last applied`, so the packets of a
    /// direction must commit in id order: the first insert takes a
    /// transaction lock per direction, held until the writer's commit (sites
    /// uploading at once queue for it; HO is the only down writer).
    pub(crate) async fn insert_packet(&self, p: &NewPacket<'_>) -> Result<i64> {
        // Typed queries (here and on every per-packet path) go in one round
        // trip; an untyped one is prepared first, which costs a second.
        let (signed, signature) = match &p.seal {
            Some((signed, signature)) => (Some(signed.as_slice()), Some(signature.as_slice())),
            None => (None, None),
        };
        let head_targets: Vec<&str> = p.heads.iter().map(|(t, _)| t.as_str()).collect();
        let head_seqs: Vec<i64> = p.heads.iter().map(|(_, h)| h.seq).collect();
        let head_hashes: Vec<&[u8]> = p.heads.iter().map(|(_, h)| h.hash.as_slice()).collect();
        let rows = self
            .client
            .query_typed(
                &format!(
                    "WITH l AS ({LOCK}),
                      n AS (SELECT coalesce($11, {NEXT_ID}) AS id FROM l),
                      c AS (INSERT INTO relay.chains AS c (origin, target, seq, hash)
                            SELECT $2, t, s, h FROM unnest($14::text[], $15::int8[], $16::bytea[]) AS x (t, s, h)
                            ON CONFLICT (origin, target) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash)
                 INSERT INTO relay.packets (id, direction, origin, kind, group_id, lsn_from, lsn_to,
                    targets, row_count, byte_count, target_count, signed, signature)
                 OVERRIDING SYSTEM VALUE
                 SELECT n.id, $1, $2, $3, coalesce($4, n.id), $5, $6, $7, $8, $9, $10, $12, $13
                   FROM n
                 RETURNING id"
                ),
                &[
                    (&p.origin.direction(), Type::TEXT),
                    (p.origin, Type::TEXT),
                    (&p.kind, Type::TEXT),
                    (&p.group_id, Type::INT8),
                    (&p.lsn_from, Type::PG_LSN),
                    (&p.lsn_to, Type::PG_LSN),
                    (&p.targets, Type::TEXT_ARRAY),
                    (&p.row_count, Type::INT8),
                    (&p.byte_count, Type::INT8),
                    (&p.target_count, Type::INT4),
                    (&p.id, Type::INT8),
                    (&signed, Type::BYTEA),
                    (&signature, Type::BYTEA),
                    (&head_targets, Type::TEXT_ARRAY),
                    (&head_seqs, Type::INT8_ARRAY),
                    (&head_hashes, Type::BYTEA_ARRAY),
                ],
            )
            .await
            .ctx(|| "writing relay.packets".into())?;
        super::get(&rows[0], "id", "relay.packets")
    }

    /// Takes the direction's lock (as [`insert_packet`](Self::insert_packet)
    /// does), the id of the next packet of `origin` (a packet signed before
    /// it is stored names its own id) and the heads of `origin`'s chains
    /// for `targets`: one round trip.
    pub(crate) async fn next_signed(
        &self,
        origin: &Origin,
        targets: &[&str],
    ) -> Result<(i64, std::collections::HashMap<String, crate::seal::Head>)> {
        let rows = self
            .client
            .query_typed(
                &format!(
                    "WITH l AS ({LOCK}), n AS (SELECT {NEXT_ID} AS id FROM l)
                     SELECT n.id, c.target, c.seq, c.hash
                       FROM n LEFT JOIN relay.chains c ON c.origin = $2 AND c.target = ANY ($3)"
                ),
                &[
                    (&origin.direction(), Type::TEXT),
                    (origin, Type::TEXT),
                    (&targets, Type::TEXT_ARRAY),
                ],
            )
            .await
            .ctx(|| "taking a packet id and reading relay.chains".into())?;
        let t = "relay.chains";
        let id = get(&rows[0], "id", "relay.packets")?;
        let mut heads = std::collections::HashMap::new();
        for r in &rows {
            let target: Option<String> = get(r, "target", t)?;
            if let Some(target) = target {
                let head = crate::seal::Head {
                    seq: get(r, "seq", t)?,
                    hash: get(r, "hash", t)?,
                };
                heads.insert(target, head);
            }
        }
        Ok((id, heads))
    }

    /// Inserts one part of packet `packet_id`.
    pub(crate) async fn insert_part(&self, packet_id: i64, part: &NewPart<'_>) -> Result<()> {
        self.client
            .execute_typed(
                "INSERT INTO relay.packet_parts (packet_id, seq, table_name, target, row_count, arrow_ipc, checksum)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    (&packet_id, Type::INT8),
                    (&part.seq, Type::INT4),
                    (&part.table, Type::TEXT),
                    (part.target, Type::TEXT),
                    (&part.rows, Type::INT8),
                    (&part.arrow_ipc, Type::BYTEA),
                    (&part.checksum, Type::BYTEA),
                ],
            )
            .await
            .ctx(|| "writing relay.packet_parts".into())?;
        Ok(())
    }
}

/// A new part's row in `relay.packet_parts`.
#[derive(Debug)]
pub(crate) struct NewPart<'a> {
    pub(crate) seq: i32,
    pub(crate) table: &'a str,
    pub(crate) target: &'a Target,
    pub(crate) rows: i64,
    pub(crate) arrow_ipc: &'a [u8],
    /// SHA-256 of `arrow_ipc`.
    pub(crate) checksum: &'a [u8],
}

impl Relay {
    /// Packets of `direction` for `target` (a site, or `ho` for up packets)
    /// in `which`, in order.
    async fn listed(
        &self,
        direction: Direction,
        target: &Target,
        which: Which,
    ) -> Result<Vec<PacketInfo>> {
        let (condition, value, limit) = match which {
            Which::After { after, limit } => ("p.id > $3", after, limit),
            Which::Group(group) => ("p.group_id = $3", group, i64::MAX),
        };
        let sql = match (direction, which) {
            // A site's next packets, through indexes, not every packet
            // after its position; the ids found are looked up by key.
            (Direction::Down, Which::After { .. }) => format!(
                "SELECT {PACKET_COLUMNS} FROM relay.packets p
                  WHERE p.direction = $1 AND p.id = ANY ({ids})
                  ORDER BY p.id LIMIT $4",
                ids = site_packet_ids("$2", Some(("$3", "$4")))
            ),
            _ => format!(
                "SELECT {PACKET_COLUMNS} FROM relay.packets p
                 WHERE p.direction = $1 AND {for_target} AND {condition}
                 ORDER BY p.id LIMIT $4",
                for_target = for_target()
            ),
        };
        let ctx = || "reading relay.packets".to_string();
        let statement = self
            .prepared_for_reading(&sql, &[Type::TEXT, Type::TEXT, Type::INT8, Type::INT8])
            .await
            .ctx(ctx)?;
        let rows = self
            .reading()
            .query(&statement, &[&direction, &target, &value, &limit])
            .await
            .ctx(ctx)?;
        PacketInfo::from_rows(&rows)
    }

    /// The next groups of packets of `direction` for `target` after `after`,
    /// each whole (a group is applied in one transaction), in order; and
    /// whether more may follow them (the listing reached its bound).
    pub(crate) async fn next_groups(
        &self,
        direction: Direction,
        target: &Target,
        after: i64,
    ) -> Result<(Vec<Vec<PacketInfo>>, bool)> {
        /// Packets listed per round trip.
        const FETCH: i64 = 500;
        let listed = self
            .listed(
                direction,
                target,
                Which::After {
                    after,
                    limit: FETCH,
                },
            )
            .await?;
        let full = listed.len() as i64 == FETCH;
        let mut groups: Vec<Vec<PacketInfo>> = Vec::new();
        for p in listed {
            match groups.last_mut() {
                Some(g) if g[0].group_id == p.group_id => g.push(p),
                _ => groups.push(vec![p]),
            }
        }
        if full {
            // The last group may go on past the listing: take it whole, on its own.
            if groups.len() > 1 {
                groups.pop();
            } else {
                let group = groups[0][0].group_id;
                groups = vec![self.listed(direction, target, Which::Group(group)).await?];
            }
        }
        Ok((groups, full))
    }

    /// Packets of `direction` for `target` up to `through` that `target` has
    /// not acked as processed: a crash came between applying them and the ack.
    pub(crate) async fn unacked(
        &self,
        direction: Direction,
        target: &Target,
        through: i64,
    ) -> Result<Vec<PacketInfo>> {
        let rows = self
            .client
            .query_typed(
                &format!(
                    "SELECT {PACKET_COLUMNS} FROM relay.packets p
                     WHERE p.direction = $1 AND p.id <= $3 AND {for_target}
                       AND NOT EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id AND a.site = $2
                                          AND a.status = {ACKED})
                     ORDER BY p.id",
                    for_target = for_target()
                ),
                &[
                    (&direction, Type::TEXT),
                    (&target, Type::TEXT),
                    (&through, Type::INT8),
                ],
            )
            .await
            .ctx(|| "reading relay.packets".into())?;
        PacketInfo::from_rows(&rows)
    }

    /// The parts of several packets for `target` (its own and those for
    /// every site), in packet order: one round trip for a run of small
    /// packets.
    pub(crate) async fn parts_of(
        &self,
        packet_ids: &[i64],
        target: &Target,
    ) -> Result<Vec<StoredPart>> {
        let ctx = || format!("reading the parts of packets {packet_ids:?}");
        let statement = self
            .prepared_for_reading(
                &format!("SELECT packet_id, seq, table_name, target, row_count, arrow_ipc, checksum FROM relay.packet_parts
                 WHERE packet_id = ANY($1) AND target IN ($2, {ALL}) ORDER BY packet_id, seq"),
                &[Type::INT8_ARRAY, Type::TEXT],
            )
            .await
            .ctx(ctx)?;
        let rows = self
            .reading()
            .query(&statement, &[&packet_ids, &target])
            .await
            .ctx(ctx)?;
        rows.into_iter().map(StoredPart::from_row).collect()
    }

    /// For HO's record: down packets with id above `after`, or written
    /// (inserted, settled) by a transaction at or after `xmin`; and the
    /// `xmin` to pass next time (the oldest transaction running now).
    pub(crate) async fn sent_since(&self, after: i64, xmin: i64) -> Result<(Vec<SentPacket>, i64)> {
        let ctx = || "reading relay.packets".to_string();
        let next: i64 = self
            .client
            .query_one(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8 AS xmin",
                &[],
            )
            .await
            .ctx(ctx)?
            .get("xmin");
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT {PACKET_COLUMNS},
                       (SELECT string_agg(a.site || ': ' || a.error, '; ' ORDER BY a.site)
                          FROM relay.acks a WHERE a.packet_id = p.id AND a.status = {ACK_FAILED}) AS error
                     FROM relay.packets p
                     WHERE p.direction = {DOWN} AND (p.id > $1 OR p.changed >= $2::text::xid8)
                     ORDER BY p.id"
                ),
                &[&after, &xmin.to_string()],
            )
            .await
            .ctx(ctx)?;
        let sent = rows
            .iter()
            .map(|r| {
                Ok(SentPacket {
                    packet: PacketInfo::from_row(r)?,
                    error: get(r, "error", "relay.acks")?,
                })
            })
            .collect::<Result<_>>()?;
        Ok((sent, next))
    }
}
