//! Status per site, as the relay sees it: Not started, In progress,
//! Success, Failed with the error (and retry), or Held at a schema change
//! (with the change as SQL).

use std::time::SystemTime;

use tokio_postgres::Row;

use super::{get, Relay};
use crate::error::{DbContext, Result};
use crate::protocol::sql::*;

/// One site's status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteStatus {
    pub site: String,
    /// `Not started`, `In progress`, `Stalled` (acks stopped while packets
    /// wait, see [`SiteStatus::stalled_after`]), `Success`, `Failed`,
    /// `Held: schema change` (the error says which, as SQL) or `Expired`.
    #[serde(rename = "status")]
    pub state: &'static str,
    /// Highest packet the site has applied.
    pub applied_through: Option<i64>,
    /// Packets for the site it has not applied yet.
    pub pending: i64,
    /// Age in seconds of the oldest pending packet.
    pub lag_seconds: Option<f64>,
    #[serde(serialize_with = "crate::serialize::rfc3339_opt")]
    pub last_success: Option<SystemTime>,
    pub error: Option<String>,
    /// When the site was expired (`[retention] max_offline`), while it is.
    #[serde(serialize_with = "crate::serialize::rfc3339_opt")]
    pub expired_at: Option<SystemTime>,
}

/// The state of a site (and its tables) whose stream waits at a schema
/// change it does not make by itself.
pub const HELD: &str = "Held: schema change";

impl Relay {
    /// The status of every registered site.
    pub async fn site_status(&self) -> Result<Vec<SiteStatus>> {
        // Compiling the plan (its estimate grows with the sites) would cost
        // more than running it.
        self.client
            .batch_execute("SET jit = off")
            .await
            .ctx(|| "reading site status from the relay".into())?;
        let rows = self
            .client
            .query(&site_status_sql(), &[])
            .await
            .ctx(|| "reading site status from the relay".into())?;
        self.client
            .batch_execute("RESET jit")
            .await
            .ctx(|| "reading site status from the relay".into())?;
        rows.iter().map(SiteStatus::from_row).collect()
    }
}

impl SiteStatus {
    /// `Stalled` instead of `In progress` when the oldest packet waiting is
    /// older than `after` and the site has acked nothing for as long: its
    /// worker is down, or cut off from the relay.
    pub fn stalled_after(&mut self, after: std::time::Duration) {
        let waited = self.lag_seconds.is_some_and(|l| l > after.as_secs_f64());
        let silent = self
            .last_success
            .is_none_or(|t| t.elapsed().is_ok_and(|e| e > after));
        if self.state == "In progress" && waited && silent {
            self.state = "Stalled";
        }
    }

    /// A row of [`site_status_sql`], its state decided.
    fn from_row(r: &Row) -> Result<SiteStatus> {
        let t = "relay status";
        let pending: i64 = get(r, "pending", t)?;
        let failed: Option<String> = get(r, "error", t)?;
        let held: Option<String> = get(r, "held", t)?;
        let unserved_first: bool = get(r, "unserved_first", t)?;
        let started: bool = get(r, "started", t)?;
        let open_requests: i64 = get(r, "open", t)?;
        let expired_at: Option<SystemTime> = get(r, "expired_at", t)?;
        let applied_through: Option<i64> = get(r, "applied_through", t)?;
        let state = if expired_at.is_some() {
            "Expired"
        } else if failed.is_some() {
            "Failed"
        } else if held.is_some() {
            HELD
        } else if !started && (unserved_first || applied_through.is_none()) {
            // Never acked a packet: its worker has not run yet.
            "Not started"
        } else if pending > 0 || open_requests > 0 {
            "In progress"
        } else {
            "Success"
        };
        Ok(SiteStatus {
            site: get(r, "site", t)?,
            state,
            applied_through,
            pending,
            lag_seconds: get(r, "lag_seconds", t)?,
            last_success: get(r, "last_success", t)?,
            error: failed.or(held),
            expired_at,
        })
    }
}

/// Every site's status in one statement: its position, pending packets and
/// their age, its first failure, its open full-sync requests.
fn site_status_sql() -> String {
    format!("-- Packets listing sites, not yet processed by each of them: one
                 -- pass over the unprocessed packets for every site at once.
                 WITH listed AS (
                   SELECT t.site, count(*) AS n, min(p.created_at) AS oldest
                     FROM relay.packets p CROSS JOIN LATERAL unnest(p.targets) AS t (site)
                    WHERE p.direction = {DOWN} AND p.status <> {PROCESSED} AND p.targets <> {ALL_ARRAY}
                      AND NOT EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id
                                         AND a.site = t.site AND a.status = {ACKED})
                    GROUP BY t.site)
                 SELECT s.code AS site, s.expired_at, ap.applied_through,
                        greatest((SELECT max(a.acked_at) FROM relay.acks a WHERE a.site = s.code AND a.status = {ACKED}),
                                 s.last_ack_floor) AS last_success,
                        pend.n + coalesce(l.n, 0) AS pending,
                        extract(epoch FROM now() - least(pend.oldest, l.oldest))::float8 AS lag_seconds,
                        (SELECT 'packet ' || a.packet_id || ': ' || coalesce(a.error, 'failed, with no error given') FROM relay.acks a
                          WHERE a.site = s.code AND a.status = {ACK_FAILED} ORDER BY a.packet_id LIMIT 1) AS error,
                        (SELECT 'packet ' || a.packet_id || ': ' || a.error FROM relay.acks a
                          WHERE a.site = s.code AND a.status = {ACK_HELD} ORDER BY a.packet_id LIMIT 1) AS held,
                        req.unserved_first, req.open,
                        s.applied_floor IS NOT NULL
                          OR EXISTS (SELECT 1 FROM relay.acks a WHERE a.site = s.code) AS started
                   FROM relay.sites s
                   CROSS JOIN LATERAL (
                     SELECT greatest((SELECT max(a.packet_id) FROM relay.acks a
                                       WHERE a.site = s.code AND a.status = {ACKED}),
                                     s.applied_floor) AS applied_through) ap
                   CROSS JOIN LATERAL (
                     SELECT coalesce(bool_or(r.reason = {FIRST} AND r.served_at IS NULL), false) AS unserved_first,
                            count(*) FILTER (WHERE r.served_at IS NULL OR (NOT EXISTS (
                              SELECT 1 FROM relay.acks a WHERE a.packet_id = r.group_id AND a.site = s.code
                                 AND a.status = {ACKED})
                              -- a purged group was processed by every target
                              AND EXISTS (SELECT 1 FROM relay.packets p WHERE p.id = r.group_id))) AS open
                       FROM relay.sync_requests r
                      WHERE r.site = s.code AND (r.group_id IS NOT NULL OR r.served_at IS NULL)) req
                   LEFT JOIN listed l ON l.site = s.code
                   -- `*` packets after its position (a site applies in order)
                   -- and since it joined, that it has not processed.
                   CROSS JOIN LATERAL (
                     SELECT count(*) AS n, min(p.created_at) AS oldest
                       FROM relay.packets p
                      WHERE p.direction = {DOWN} AND p.targets = {ALL_ARRAY} AND s.expired_at IS NULL
                        AND p.id > greatest(s.first_packet, ap.applied_through)
                        AND NOT EXISTS (SELECT 1 FROM relay.acks a
                                         WHERE a.packet_id = p.id AND a.site = s.code AND a.status = {ACKED})) pend
                  ORDER BY s.code")
}

/// What the relay's own connection says of the relay: its clock, and
/// whether the connection is encrypted.
#[derive(Debug, Clone)]
pub(crate) struct RelayHealth {
    /// The relay's clock.
    pub(crate) now: SystemTime,
    /// The connection uses TLS.
    pub(crate) ssl: bool,
    /// Packets every target processed, created more than a day ago.
    pub(crate) processed_old: i64,
}

impl Relay {
    /// The relay's clock, TLS use and backlog of processed packets.
    pub(crate) async fn health(&self) -> Result<RelayHealth> {
        let row = self
            .client
            .query_one(
                &format!("SELECT now()::timestamptz AS now,
                        coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false) AS ssl,
                        (SELECT count(*) FROM relay.packets
                          WHERE status = {PROCESSED} AND created_at < now() - interval '1 day') AS processed_old"),
                &[],
            )
            .await
            .ctx(|| "reading the relay's clock".into())?;
        let t = "relay health";
        Ok(RelayHealth {
            now: get(&row, "now", t)?,
            ssl: get(&row, "ssl", t)?,
            processed_old: get(&row, "processed_old", t)?,
        })
    }
}

/// One table at one site, as the relay sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableStatus {
    pub table: String,
    /// `Not started`, `In progress`, `Success`, `Failed` or `Held: schema
    /// change`.
    #[serde(rename = "status")]
    pub state: &'static str,
    /// When the last full sync the site applied was written.
    #[serde(serialize_with = "crate::serialize::rfc3339_opt")]
    pub last_full_sync: Option<SystemTime>,
    /// Rows that full sync loaded.
    pub full_sync_rows: Option<i64>,
    /// The last delta packet with this table the site applied.
    pub last_delta: Option<i64>,
    /// Packets with this table the site has not applied.
    pub pending: i64,
    pub error: Option<String>,
}

impl Relay {
    /// Each published table's status at `site`.
    pub(crate) async fn table_status(&self, site: &str) -> Result<Vec<TableStatus>> {
        let rows = self
            .client
            .query(
                &format!("WITH mine AS (
                   SELECT p.id, p.kind, p.group_id, p.created_at, pp.table_name, pp.row_count,
                          EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id AND a.site = $1
                                     AND a.status = {ACKED}) AS done,
                          (SELECT a.error FROM relay.acks a WHERE a.packet_id = p.id AND a.site = $1
                              AND a.status IN ({ACK_FAILED}, {ACK_HELD})) AS error,
                          EXISTS (SELECT 1 FROM relay.acks a WHERE a.packet_id = p.id AND a.site = $1
                                     AND a.status = {ACK_HELD}) AS held
                     FROM relay.packets p
                     JOIN relay.packet_parts pp ON pp.packet_id = p.id AND pp.target IN ($1, {ALL})
                    WHERE p.direction = {DOWN} AND p.id = ANY ({ids})
                 ), last_full AS (
                   SELECT DISTINCT ON (table_name) table_name, group_id
                     FROM mine WHERE kind = {SNAPSHOT} AND done ORDER BY table_name, group_id DESC
                 )
                 SELECT t.name AS table_name,
                        (SELECT l.group_id FROM last_full l WHERE l.table_name = t.name) AS live_group,
                        (SELECT max(m.created_at) FROM mine m JOIN last_full l USING (table_name, group_id)
                          WHERE m.table_name = t.name) AS live_at,
                        (SELECT sum(m.row_count)::int8 FROM mine m JOIN last_full l USING (table_name, group_id)
                          WHERE m.table_name = t.name) AS live_raw,
                        h.full_group, h.full_at, h.full_raw_rows,
                        greatest(h.last_delta, (SELECT max(m.id) FROM mine m
                          WHERE m.table_name = t.name AND m.kind = {DELTA} AND m.done)) AS last_delta,
                        (SELECT count(DISTINCT m.id) FROM mine m WHERE m.table_name = t.name AND NOT m.done) AS pending,
                        (SELECT min('packet ' || m.id || ': ' || m.error) FROM mine m
                          WHERE m.table_name = t.name AND m.error IS NOT NULL) AS error,
                        coalesce((SELECT bool_and(m.held) FROM mine m
                          WHERE m.table_name = t.name AND m.error IS NOT NULL), false) AS held
                   FROM relay.tables t
                   -- what purged packets left of it
                   LEFT JOIN relay.table_history h ON h.site = $1 AND h.table_name = t.name
                  ORDER BY t.name", ids = super::packets::site_packet_ids("$1", None)),
                &[&site],
            )
            .await
            .ctx(|| format!("reading the status of site {site}'s tables"))?;
        let t = "relay table status";
        rows.iter()
            .map(|r| {
                let (last_full_sync, raw_rows) = last_full_sync(r)?;
                let pending: i64 = get(r, "pending", t)?;
                let error: Option<String> = get(r, "error", t)?;
                let held: bool = get(r, "held", t)?;
                let state = match (&error, last_full_sync, pending) {
                    (Some(_), ..) if held => HELD,
                    (Some(_), ..) => "Failed",
                    (None, None, 0) => "Not started",
                    (None, None, _) | (None, Some(_), 1..) => "In progress",
                    (None, Some(_), _) => "Success",
                };
                Ok(TableStatus {
                    table: get(r, "table_name", t)?,
                    state,
                    last_full_sync,
                    // The rows counted include one for the group's start.
                    full_sync_rows: Some(raw_rows.map_or(0, |n| (n - 1).max(0))),
                    last_delta: get(r, "last_delta", t)?,
                    pending,
                    error,
                })
            })
            .collect()
    }
}

/// The latest full sync a site applied of a table, from the packets still
/// in the relay and the history purged ones left: when it was written, and
/// its parts' rows as counted (a group partly purged adds up).
fn last_full_sync(r: &Row) -> Result<(Option<SystemTime>, Option<i64>)> {
    let t = "relay table status";
    let live: (Option<i64>, Option<SystemTime>, Option<i64>) = (
        get(r, "live_group", t)?,
        get(r, "live_at", t)?,
        get(r, "live_raw", t)?,
    );
    let kept: (Option<i64>, Option<SystemTime>, Option<i64>) = (
        get(r, "full_group", t)?,
        get(r, "full_at", t)?,
        get(r, "full_raw_rows", t)?,
    );
    Ok(match (live, kept) {
        ((Some(l), at, raw), (Some(h), h_at, h_raw)) if l == h => {
            (at.max(h_at), Some(raw.unwrap_or(0) + h_raw.unwrap_or(0)))
        }
        ((Some(l), ..), (Some(h), h_at, h_raw)) if h > l => (h_at, h_raw),
        ((Some(_), at, raw), _) => (at, raw),
        (_, (_, h_at, h_raw)) => (h_at, h_raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn waiting(lag: f64, acked_ago: Option<u64>) -> SiteStatus {
        SiteStatus {
            site: "s1".into(),
            state: "In progress",
            applied_through: Some(7),
            pending: 3,
            lag_seconds: Some(lag),
            last_success: acked_ago.map(|s| SystemTime::now() - Duration::from_secs(s)),
            error: None,
            expired_at: None,
        }
    }

    #[test]
    fn a_site_whose_acks_stopped_while_packets_wait_is_stalled() {
        let after = Duration::from_secs(120);
        let cases = [
            (waiting(300.0, Some(600)), "Stalled"),
            (waiting(300.0, None), "Stalled"),
            // It acked lately: busy, not stalled.
            (waiting(300.0, Some(10)), "In progress"),
            // Packets are fresh.
            (waiting(30.0, Some(600)), "In progress"),
        ];
        for (mut s, state) in cases {
            s.stalled_after(after);
            assert_eq!(s.state, state, "{s:?}");
        }
    }
}

/// A packet a site holds for a schema change, as its ack says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeldAck {
    pub site: String,
    pub packet: i64,
    /// What changed, why the site did not follow, and the change as SQL.
    pub error: String,
}

impl HeldAck {
    /// A row of (site, packet_id, error).
    fn of_row(r: &Row) -> HeldAck {
        HeldAck {
            site: r.get(0),
            packet: r.get(1),
            error: r.get(2),
        }
    }
}

impl Relay {
    /// The packets sites hold for schema changes (only `site`'s, if given).
    pub(crate) async fn held(&self, site: Option<&str>) -> Result<Vec<HeldAck>> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT site, packet_id, coalesce(error, '') FROM relay.acks
                      WHERE status = {ACK_HELD} AND ($1::text IS NULL OR site = $1)
                      ORDER BY site, packet_id"
                ),
                &[&site],
            )
            .await
            .ctx(|| "reading the held packets from the relay".into())?;
        Ok(rows.iter().map(HeldAck::of_row).collect())
    }
}

impl Relay {
    /// Approves the changes sites hold (`site`'s only, if given): each makes
    /// its own on its next sync. Returns those approved.
    pub(crate) async fn approve_held(&self, site: Option<&str>) -> Result<Vec<HeldAck>> {
        let rows = self
            .client
            .query(
                &format!(
                    "WITH held AS (
                       SELECT a.site, a.packet_id, coalesce(a.error, '') AS error FROM relay.acks a
                        WHERE a.status = {ACK_HELD} AND ($1::text IS NULL OR a.site = $1)
                          AND EXISTS (SELECT 1 FROM relay.sites s WHERE s.code = a.site)
                     ), approved AS (
                       INSERT INTO relay.schema_approvals (site, packet_id)
                       SELECT site, packet_id FROM held ON CONFLICT DO NOTHING
                     )
                     SELECT site, packet_id, error FROM held ORDER BY site, packet_id"
                ),
                &[&site],
            )
            .await
            .ctx(|| "writing relay.schema_approvals".into())?;
        Ok(rows.iter().map(HeldAck::of_row).collect())
    }

    /// Whether HO approved the schema change `target` holds at `packet`.
    pub(crate) async fn schema_approved(
        &self,
        target: &crate::protocol::Target,
        packet: i64,
    ) -> Result<bool> {
        let crate::protocol::Target::Site(site) = target else {
            return Ok(false);
        };
        let row = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM relay.schema_approvals WHERE site = $1 AND packet_id = $2)",
                &[site, &packet],
            )
            .await
            .ctx(|| "reading relay.schema_approvals".into())?;
        Ok(row.get(0))
    }
}

/// What a site sent up to HO ("Site → Server"), as the relay sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadStatus {
    /// `Not started` (nothing sent yet), `In progress` (HO has not merged
    /// everything), `Success`, `Failed` or `Held: schema change`.
    #[serde(rename = "status")]
    pub state: &'static str,
    /// Up packets HO has not merged yet.
    pub pending: i64,
    /// Up packets HO merged.
    pub merged: i64,
    /// When HO last merged one.
    #[serde(serialize_with = "crate::serialize::rfc3339_opt")]
    pub last_success: Option<SystemTime>,
    pub error: Option<String>,
}

impl Relay {
    /// The state of `site`'s uploads to HO.
    pub(crate) async fn upload_status(&self, site: &str) -> Result<UploadStatus> {
        let row = self
            .client
            .query_one(
                &format!(
                    "WITH up AS (
                       SELECT p.id, a.status, a.error, a.acked_at
                         FROM relay.packets p
                         LEFT JOIN relay.acks a ON a.packet_id = p.id AND a.site = $2
                        WHERE p.direction = {UP} AND p.origin = $1)
                     SELECT count(*) FILTER (WHERE status IS DISTINCT FROM {ACKED}) AS pending,
                            count(*) FILTER (WHERE status = {ACKED}) AS merged,
                            max(acked_at) FILTER (WHERE status = {ACKED}) AS last_success,
                            (SELECT 'packet ' || u.id || ': ' || coalesce(u.error, 'failed, with no error given')
                               FROM up u WHERE u.status IN ({ACK_FAILED}, {ACK_HELD}) ORDER BY u.id LIMIT 1) AS error,
                            bool_or(status = {ACK_HELD}) AS held
                       FROM up"
                ),
                &[&site, &crate::protocol::Target::Ho.as_str()],
            )
            .await
            .ctx(|| format!("reading what site {site} sent to HO"))?;
        let t = "relay upload status";
        let pending: i64 = get(&row, "pending", t)?;
        let merged: i64 = get(&row, "merged", t)?;
        let error: Option<String> = get(&row, "error", t)?;
        let held: Option<bool> = get(&row, "held", t)?;
        let state = match (&error, pending, merged) {
            (Some(_), ..) if held == Some(true) => HELD,
            (Some(_), ..) => "Failed",
            (None, 0, 0) => "Not started",
            (None, 1.., _) => "In progress",
            (None, _, _) => "Success",
        };
        Ok(UploadStatus {
            state,
            pending,
            merged,
            last_success: get(&row, "last_success", t)?,
            error,
        })
    }
}

impl SiteStatus {
    /// What an operator does about this status, when anything.
    pub fn fix(&self) -> Option<String> {
        let site = &self.site;
        match (self.state, &self.error) {
            ("Expired", _) => Some(
                "acked nothing for [retention] max_offline; its next sync brings a full sync".into(),
            ),
            (HELD, _) => Some(format!(
                "a schema change waits: relaysync schema show --site {site}; approve with relaysync schema apply --site {site}"
            )),
            (_, Some(_)) => Some(format!(
                "fix the cause, then retry: relaysync pos sync --once at {site} (or Sync Now on its console)"
            )),
            ("Stalled", None) => Some(
                "packets wait: check that the site's worker runs and reaches the relay".into(),
            ),
            _ => None,
        }
    }
}

/// One packet as the relay holds it, with its parts and acks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PacketDetail {
    pub packet: i64,
    pub direction: String,
    pub origin: String,
    pub kind: String,
    pub group: i64,
    pub targets: Vec<String>,
    pub rows: i64,
    pub bytes: i64,
    #[serde(serialize_with = "crate::serialize::rfc3339")]
    pub created_at: SystemTime,
    pub status: String,
    pub parts: Vec<PartDetail>,
    pub acks: Vec<AckDetail>,
}

/// A part of a packet: one table's rows for one target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartDetail {
    pub seq: i32,
    pub table: String,
    pub target: String,
    pub rows: i64,
}

/// A target's ack of a packet.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AckDetail {
    pub site: String,
    pub status: String,
    pub rows: i64,
    pub error: Option<String>,
    #[serde(serialize_with = "crate::serialize::rfc3339")]
    pub at: SystemTime,
}

impl Relay {
    /// Packet `id` with its parts and acks; None when the relay no longer
    /// holds it (purged after every target processed it).
    pub(crate) async fn packet_detail(&self, id: i64) -> Result<Option<PacketDetail>> {
        let ctx = || format!("reading packet {id} from the relay");
        let Some(p) = self
            .client
            .query_opt(
                "SELECT id, direction, origin, kind, group_id, targets, row_count, byte_count, created_at, status
                   FROM relay.packets WHERE id = $1",
                &[&id],
            )
            .await
            .ctx(ctx)?
        else {
            return Ok(None);
        };
        let t = "relay packet";
        let parts = self
            .client
            .query(
                "SELECT seq, table_name, target, row_count FROM relay.packet_parts
                  WHERE packet_id = $1 ORDER BY seq",
                &[&id],
            )
            .await
            .ctx(ctx)?
            .iter()
            .map(|r| {
                Ok(PartDetail {
                    seq: get(r, "seq", t)?,
                    table: get(r, "table_name", t)?,
                    target: get(r, "target", t)?,
                    rows: get(r, "row_count", t)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let acks = self
            .client
            .query(
                "SELECT site, status, rows, error, acked_at FROM relay.acks
                  WHERE packet_id = $1 ORDER BY site",
                &[&id],
            )
            .await
            .ctx(ctx)?
            .iter()
            .map(|r| {
                Ok(AckDetail {
                    site: get(r, "site", t)?,
                    status: get(r, "status", t)?,
                    rows: get(r, "rows", t)?,
                    error: get(r, "error", t)?,
                    at: get(r, "acked_at", t)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(PacketDetail {
            packet: id,
            direction: get(&p, "direction", t)?,
            origin: get(&p, "origin", t)?,
            kind: get(&p, "kind", t)?,
            group: get(&p, "group_id", t)?,
            targets: get(&p, "targets", t)?,
            rows: get(&p, "row_count", t)?,
            bytes: get(&p, "byte_count", t)?,
            created_at: get(&p, "created_at", t)?,
            status: get(&p, "status", t)?,
            parts,
            acks,
        }))
    }
}
