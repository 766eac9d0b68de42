//! The relay database: its schema and every query relaysync runs against it.

pub mod migrate;

use tokio_postgres::Client;

use crate::error::{DbContext, Error, Result};
use tokio_postgres::types::Type;

use crate::postgres::{format_lsn, literal, literal_array, parse_lsn};

/// A packet as the relay lists it (without its parts).
#[derive(Debug, Clone)]
pub struct PacketInfo {
    pub id: i64,
    /// `ho`, or the site an up packet comes from.
    pub origin: String,
    pub group_id: i64,
    pub kind: String,
    pub row_count: i64,
    pub byte_count: i64,
    pub targets: Vec<String>,
    pub status: String,
    pub created_at: std::time::SystemTime,
}

/// One part of a packet as stored.
#[derive(Debug)]
pub struct StoredPart {
    pub table_name: String,
    pub target: String,
    pub row_count: i64,
    pub arrow_ipc: Vec<u8>,
}

/// A new packet's row in `relay.packets`.
#[derive(Debug)]
pub struct NewPacket<'a> {
    pub direction: &'a str,
    pub origin: &'a str,
    pub kind: &'a str,
    pub group_id: Option<i64>,
    pub lsn_from: u64,
    pub lsn_to: u64,
    pub targets: &'a [String],
    pub row_count: i64,
    pub byte_count: i64,
}

/// An acknowledgement from a site.
#[derive(Debug, Clone)]
pub struct Ack {
    pub packet_id: i64,
    pub status: &'static str,
    pub rows: i64,
    pub error: Option<String>,
}

/// A pending full-sync request.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub id: i64,
    pub site: String,
    /// None: every configured table.
    pub tables: Option<Vec<String>>,
}

/// A connection to the relay database.
pub struct Relay {
    pub client: Client,
}

const PACKET_COLUMNS: &str =
    "id, group_id, kind, row_count, byte_count, targets, status, created_at, origin";

fn packet_info(row: &tokio_postgres::Row) -> PacketInfo {
    PacketInfo {
        id: row.get(0),
        group_id: row.get(1),
        kind: row.get(2),
        row_count: row.get(3),
        byte_count: row.get(4),
        targets: row.get(5),
        status: row.get(6),
        created_at: row.get(7),
        origin: row.get(8),
    }
}

impl Relay {
    /// Connects and checks that `relaysync setup relay` has run.
    pub async fn connect(url: &str) -> Result<Relay> {
        let client = crate::postgres::connect("relay", url).await?;
        if !migrate::is_set_up(&client, migrate::Target::Relay).await? {
            return Err(Error::Setup(
                "the relay database has no relay schema; run `relaysync setup relay` first".into(),
            ));
        }
        Ok(Relay { client })
    }

    /// Runs `sql` (BEGIN, COMMIT, ROLLBACK…).
    pub async fn exec(&self, sql: &str) -> Result<()> {
        self.client
            .batch_execute(sql)
            .await
            .ctx(|| format!("relay: {sql}"))
    }

    /// Codes of the registered sites.
    pub async fn sites(&self) -> Result<Vec<String>> {
        let rows = self
            .client
            .query("SELECT code FROM relay.sites ORDER BY code", &[])
            .await
            .ctx(|| "reading relay.sites".into())?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Registers a site; false when it was registered already.
    pub async fn add_site(&self, code: &str) -> Result<bool> {
        let n = self
            .client
            .execute(
                "INSERT INTO relay.sites (code) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&code],
            )
            .await
            .ctx(|| "registering the site".into())?;
        Ok(n == 1)
    }

    /// Registers a site and asks for its first full sync; false when it was
    /// registered already.
    pub async fn add_site_with_first_sync(&self, code: &str) -> Result<bool> {
        let n = self
            .client
            .execute(
                "WITH added AS (INSERT INTO relay.sites (code) VALUES ($1) ON CONFLICT DO NOTHING RETURNING code)
                 INSERT INTO relay.sync_requests (site, reason) SELECT code, 'first' FROM added",
                &[&code],
            )
            .await
            .ctx(|| "registering the site".into())?;
        Ok(n == 1)
    }

    /// Asks for a full sync of `tables` (None: all) at each of `sites`.
    pub async fn request_sync(
        &self,
        sites: &[String],
        tables: Option<&[String]>,
        reason: &str,
    ) -> Result<()> {
        let tables: Option<Vec<String>> = tables.map(|t| t.to_vec());
        for site in sites {
            self.require_site(site).await?;
        }
        self.client
            .execute(
                "INSERT INTO relay.sync_requests (site, tables, reason) SELECT s, $2, $3 FROM unnest($1::text[]) s",
                &[&sites, &tables, &reason],
            )
            .await
            .ctx(|| "writing relay.sync_requests".into())?;
        Ok(())
    }

    /// Full-sync requests not served yet, oldest first.
    pub async fn pending_requests(&self) -> Result<Vec<SyncRequest>> {
        let rows = self
            .client
            .query(
                "SELECT id, site, tables FROM relay.sync_requests WHERE served_at IS NULL ORDER BY id",
                &[],
            )
            .await
            .ctx(|| "reading relay.sync_requests".into())?;
        Ok(rows
            .iter()
            .map(|r| SyncRequest {
                id: r.get(0),
                site: r.get(1),
                tables: r.get(2),
            })
            .collect())
    }

    /// Marks requests served by a snapshot group (inside its transaction).
    pub async fn mark_served(&self, ids: &[i64], group: Option<i64>) -> Result<()> {
        self.client
            .execute(
                "UPDATE relay.sync_requests SET served_at = now(), group_id = $2 WHERE id = ANY($1)",
                &[&ids, &group],
            )
            .await
            .ctx(|| "writing relay.sync_requests".into())?;
        Ok(())
    }

    /// Fails with the fix when `site` is not registered.
    pub async fn require_site(&self, site: &str) -> Result<()> {
        let row = self
            .client
            .query_opt("SELECT 1 FROM relay.sites WHERE code = $1", &[&site])
            .await
            .ctx(|| "reading relay.sites".into())?;
        if row.is_none() {
            return Err(Error::Setup(format!(
                "site '{site}' is not registered in the relay; run `relaysync site add {site}`"
            )));
        }
        Ok(())
    }

    /// The end LSN of the last transaction captured from `origin` (0 if none).
    pub async fn capture_lsn(&self, origin: &str) -> Result<u64> {
        let row = self
            .client
            .query_opt(
                "SELECT lsn::text FROM relay.capture_state WHERE origin = $1",
                &[&origin],
            )
            .await
            .ctx(|| "reading relay.capture_state".into())?;
        Ok(row
            .and_then(|r| parse_lsn(r.get::<_, &str>(0)))
            .unwrap_or(0))
    }

    /// Records the capture position (inside the packets' transaction).
    pub async fn set_capture_lsn(&self, origin: &str, slot: &str, lsn: u64) -> Result<()> {
        // Typed queries (here and on every per-packet path) go in one round
        // trip; an untyped one is prepared first, which costs a second.
        self.client
            .execute_typed(
                "INSERT INTO relay.capture_state (origin, slot, lsn) VALUES ($1, $2, $3::text::pg_lsn)
                 ON CONFLICT (origin) DO UPDATE SET slot = EXCLUDED.slot,
                   lsn = greatest(relay.capture_state.lsn, EXCLUDED.lsn), updated_at = now()",
                &[
                    (&origin, Type::TEXT),
                    (&slot, Type::TEXT),
                    (&format_lsn(lsn), Type::TEXT),
                ],
            )
            .await
            .ctx(|| "writing relay.capture_state".into())?;
        Ok(())
    }

    /// Inserts a packet row and returns its id; a packet without a group
    /// starts one (its group id is its own id).
    ///
    /// Readers take packets by `id > last applied`, so the packets of a
    /// direction must commit in id order: the first insert takes a
    /// transaction lock per direction, held until the writer's commit (sites
    /// uploading at once queue for it; HO is the only down writer).
    pub async fn insert_packet(&self, p: &NewPacket<'_>) -> Result<i64> {
        let rows = self
            .client
            .query_typed(
                "WITH l AS (SELECT pg_advisory_xact_lock(hashtext('relay.packets ' || $1))),
                      n AS (SELECT nextval(pg_get_serial_sequence('relay.packets', 'id')) AS id FROM l)
                 INSERT INTO relay.packets (id, direction, origin, kind, group_id, lsn_from, lsn_to,
                    targets, row_count, byte_count)
                 OVERRIDING SYSTEM VALUE
                 SELECT n.id, $1, $2, $3, coalesce($4, n.id), $5::text::pg_lsn, $6::text::pg_lsn,
                        $7, $8, $9
                   FROM n
                 RETURNING id",
                &[
                    (&p.direction, Type::TEXT),
                    (&p.origin, Type::TEXT),
                    (&p.kind, Type::TEXT),
                    (&p.group_id, Type::INT8),
                    (&format_lsn(p.lsn_from), Type::TEXT),
                    (&format_lsn(p.lsn_to), Type::TEXT),
                    (&p.targets, Type::TEXT_ARRAY),
                    (&p.row_count, Type::INT8),
                    (&p.byte_count, Type::INT8),
                ],
            )
            .await
            .ctx(|| "writing relay.packets".into())?;
        Ok(rows[0].get(0))
    }

    /// Inserts one part of a packet.
    pub async fn insert_part(
        &self,
        packet_id: i64,
        seq: i32,
        table: &str,
        target: &str,
        rows: i64,
        arrow_ipc: &[u8],
    ) -> Result<()> {
        self.client
            .execute_typed(
                "INSERT INTO relay.packet_parts (packet_id, seq, table_name, target, row_count, arrow_ipc)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    (&packet_id, Type::INT8),
                    (&seq, Type::INT4),
                    (&table, Type::TEXT),
                    (&target, Type::TEXT),
                    (&rows, Type::INT8),
                    (&arrow_ipc, Type::BYTEA),
                ],
            )
            .await
            .ctx(|| "writing relay.packet_parts".into())?;
        Ok(())
    }

    /// Packets of `direction` for `site` (`ho` for up packets) after
    /// `after`, in order, at most `limit`.
    pub async fn next_packets(
        &self,
        direction: &str,
        site: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<PacketInfo>> {
        let rows = self
            .client
            .query_typed(
                &format!(
                    "SELECT {PACKET_COLUMNS} FROM relay.packets
                     WHERE direction = $4 AND id > $2 AND $1 = ANY(targets)
                     ORDER BY id LIMIT $3"
                ),
                &[
                    (&site, Type::TEXT),
                    (&after, Type::INT8),
                    (&limit, Type::INT8),
                    (&direction, Type::TEXT),
                ],
            )
            .await
            .ctx(|| "reading relay.packets".into())?;
        Ok(rows.iter().map(packet_info).collect())
    }

    /// The next groups of packets of `direction` for `site` after `after`,
    /// each whole (a group is applied in one transaction), in order.
    pub async fn next_groups(
        &self,
        direction: &str,
        site: &str,
        after: i64,
    ) -> Result<Vec<Vec<PacketInfo>>> {
        /// Packets listed per round trip.
        const FETCH: i64 = 500;
        let listed = self.next_packets(direction, site, after, FETCH).await?;
        let mut groups: Vec<Vec<PacketInfo>> = Vec::new();
        for p in listed.iter().cloned() {
            match groups.last_mut() {
                Some(g) if g[0].group_id == p.group_id => g.push(p),
                _ => groups.push(vec![p]),
            }
        }
        if listed.len() as i64 == FETCH {
            // The last group may go on past the listing: take it whole, on its own.
            if groups.len() > 1 {
                groups.pop();
            } else {
                groups = vec![
                    self.group_packets(direction, site, groups[0][0].group_id)
                        .await?,
                ];
            }
        }
        Ok(groups)
    }

    /// Packets of `direction` for `site` up to `through` that `site` has not
    /// acked: a crash came between applying them and the ack.
    pub async fn unacked(
        &self,
        direction: &str,
        site: &str,
        through: i64,
    ) -> Result<Vec<PacketInfo>> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT {PACKET_COLUMNS} FROM relay.packets p
                     WHERE direction = $1 AND id <= $3 AND $2 = ANY(targets)
                       AND NOT EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id AND a.site = $2
                                          AND a.status = 'PROCESSED')
                     ORDER BY id"
                ),
                &[&direction, &site, &through],
            )
            .await
            .ctx(|| "reading relay.packets".into())?;
        Ok(rows.iter().map(packet_info).collect())
    }

    /// Every packet of `direction` in `group` for `site`, in order.
    pub async fn group_packets(
        &self,
        direction: &str,
        site: &str,
        group: i64,
    ) -> Result<Vec<PacketInfo>> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT {PACKET_COLUMNS} FROM relay.packets
                     WHERE direction = $3 AND group_id = $2 AND $1 = ANY(targets) ORDER BY id"
                ),
                &[&site, &group, &direction],
            )
            .await
            .ctx(|| "reading relay.packets".into())?;
        Ok(rows.iter().map(packet_info).collect())
    }

    /// The parts of a packet meant for `site` (its own and those for every site).
    pub async fn parts(&self, packet_id: i64, site: &str) -> Result<Vec<StoredPart>> {
        Ok(self
            .parts_of(&[packet_id], site)
            .await?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// The parts of several packets for `site`, in packet order, each with
    /// its packet id: one round trip for a run of small packets.
    pub async fn parts_of(&self, packet_ids: &[i64], site: &str) -> Result<Vec<(i64, StoredPart)>> {
        let rows = self
            .client
            .query_typed(
                "SELECT packet_id, table_name, target, row_count, arrow_ipc FROM relay.packet_parts
                 WHERE packet_id = ANY($1) AND target IN ($2, '*') ORDER BY packet_id, seq",
                &[(&packet_ids, Type::INT8_ARRAY), (&site, Type::TEXT)],
            )
            .await
            .ctx(|| format!("reading the parts of packets {packet_ids:?}"))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get(0),
                    StoredPart {
                        table_name: r.get(1),
                        target: r.get(2),
                        row_count: r.get(3),
                        arrow_ipc: r.get(4),
                    },
                )
            })
            .collect())
    }

    /// Writes `site`'s acks and updates each packet's status: `PROCESSED` once
    /// every target acked it, `FAILED` while any target failed it.
    pub async fn ack(&self, site: &str, acks: &[Ack]) -> Result<()> {
        if acks.is_empty() {
            return Ok(());
        }
        // One round trip: ten sites ack the same packets, and each holds the
        // packets' row locks until its commit. Statements of one simple query
        // each take a new snapshot, so the status UPDATE, run after the lock,
        // sees the acks of every site that committed before it.
        let ids = literal_array(acks.iter().map(|a| a.packet_id.to_string()));
        let statuses = literal_array(acks.iter().map(|a| literal(a.status)));
        let rows = literal_array(acks.iter().map(|a| a.rows.to_string()));
        let errors = literal_array(
            acks.iter()
                .map(|a| a.error.as_deref().map_or("NULL".to_string(), literal)),
        );
        let sql = format!(
            "BEGIN;
             SELECT 1 FROM relay.packets WHERE id = ANY({ids}::int8[]) ORDER BY id FOR UPDATE;
             INSERT INTO relay.acks (packet_id, site, status, rows, error)
               SELECT a.id, {site}, a.status, a.rows, a.error
                 FROM unnest({ids}::int8[], {statuses}::text[], {rows}::int8[], {errors}::text[])
                      AS a (id, status, rows, error)
             ON CONFLICT (packet_id, site) DO UPDATE SET status = EXCLUDED.status,
               rows = EXCLUDED.rows, error = EXCLUDED.error, acked_at = now();
             UPDATE relay.packets p SET status = CASE
               WHEN EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id AND a.status = 'FAILED')
                 THEN 'FAILED'
               WHEN (SELECT count(*) FROM relay.acks a WHERE a.packet_id = p.id AND a.status = 'PROCESSED')
                    >= cardinality(p.targets)
                 THEN 'PROCESSED'
               ELSE 'UPLOADED' END
             WHERE p.id = ANY({ids}::int8[]);
             COMMIT;",
            site = literal(site),
        );
        let result = self
            .client
            .batch_execute(&sql)
            .await
            .ctx(|| "writing relay.acks".into());
        if result.is_err() {
            // A failed statement leaves the explicit transaction open and aborted.
            let _ = self.exec("ROLLBACK").await;
        }
        result
    }

    /// Down packets with id above `after`, or among `ids`, for HO's record.
    pub async fn packets_since(
        &self,
        after: i64,
        ids: &[i64],
    ) -> Result<Vec<(PacketInfo, Option<String>)>> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT {PACKET_COLUMNS},
                       (SELECT string_agg(a.site || ': ' || a.error, '; ' ORDER BY a.site)
                          FROM relay.acks a WHERE a.packet_id = p.id AND a.status = 'FAILED')
                     FROM relay.packets p
                     WHERE direction = 'down' AND (id > $1 OR id = ANY($2)) ORDER BY id"
                ),
                &[&after, &ids],
            )
            .await
            .ctx(|| "reading relay.packets".into())?;
        Ok(rows.iter().map(|r| (packet_info(r), r.get(8))).collect())
    }
}
