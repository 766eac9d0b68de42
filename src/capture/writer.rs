//! Writing sealed packets into the relay: one relay transaction per group,
//! committed with the capture position when there is one.

use super::batch::PacketDraft;
use crate::error::{Error, Result};
use crate::packet::encode_part;
use crate::protocol::{Lsn, Origin, PacketKind};
use crate::relay::{NewPacket, Relay};
use crate::route::ALL_SITES;

/// What a writer has stored so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    pub packets: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// Writes sealed packets into the relay, one relay transaction per group.
pub(super) struct Writer<'a> {
    relay: &'a Relay,
    origin: Origin,
    kind: PacketKind,
    /// The sites a `*` part is for: every registered site, or these.
    only_sites: Option<Vec<String>>,
    /// Whether a relay transaction is open.
    open: bool,
    /// The group of the open transaction, once its first packet is written.
    group: Option<i64>,
    /// The sites of the open transaction.
    sites: Vec<String>,
    written: Written,
}

impl<'a> Writer<'a> {
    /// A writer of `kind` packets from `origin`.
    pub(super) fn new(relay: &'a Relay, origin: &Origin, kind: PacketKind) -> Writer<'a> {
        Writer {
            relay,
            origin: origin.clone(),
            kind,
            only_sites: None,
            open: false,
            group: None,
            sites: Vec::new(),
            written: Written::default(),
        }
    }

    /// Packets go to these sites only (a snapshot for the sites that asked,
    /// an upload for HO).
    pub(super) fn for_sites(mut self, sites: Vec<String>) -> Self {
        self.only_sites = Some(sites);
        self
    }

    /// The group being written, once its first packet is.
    pub(super) fn group(&self) -> Option<i64> {
        self.group
    }

    /// Whether a relay transaction is open: packets of a group not committed yet.
    pub(super) fn is_open(&self) -> bool {
        self.open
    }

    /// What was written so far.
    pub(super) fn written(&self) -> Written {
        self.written
    }

    /// Opens the relay transaction if needed.
    pub(super) async fn begin(&mut self) -> Result<()> {
        if !self.open {
            self.relay.begin().await?;
            self.open = true;
            self.group = None;
            self.sites = match &self.only_sites {
                Some(s) => s.clone(),
                None => self.relay.active_sites().await?,
            };
        }
        Ok(())
    }

    /// Writes one packet of the open group (opening it if needed). Parts for
    /// sites that are not registered are left out, and a packet for nobody
    /// is not written.
    pub(super) async fn write(&mut self, draft: PacketDraft) -> Result<()> {
        self.begin().await?;
        let mut targets: Vec<String> = Vec::new();
        let mut for_all = false;
        let mut parts = Vec::with_capacity(draft.parts.len());
        let mut rows = 0i64;
        let mut bytes = 0i64;
        for part in &draft.parts {
            if part.changes.is_empty() {
                continue;
            }
            if part.target == ALL_SITES {
                for_all = true;
                targets.extend(self.sites.iter().cloned());
            } else if self.sites.contains(&part.target) {
                targets.push(part.target.clone());
            } else {
                tracing::warn!(
                    table = %part.shape.name,
                    site = %part.target,
                    rows = part.changes.len(),
                    "rows routed to a site that is not registered are not stored; `relaysync site add` it, and its first sync loads them"
                );
                continue;
            }
            let ipc = encode_part(&part.shape, &part.changes)
                .map_err(|source| Error::Packet { packet: 0, source })?;
            rows += part.changes.len() as i64;
            bytes += ipc.len() as i64;
            parts.push((part, ipc));
        }
        targets.sort();
        targets.dedup();
        if parts.is_empty() || targets.is_empty() {
            return Ok(());
        }
        // A packet for every registered site lists none of them: `*` and
        // their number (see migrations/relay/V7).
        let target_count = match (for_all, &self.only_sites) {
            (true, None) => {
                let count = i32::try_from(targets.len()).unwrap_or(i32::MAX);
                targets = vec![ALL_SITES.to_string()];
                Some(count)
            }
            _ => None,
        };
        let id = self
            .relay
            .insert_packet(&NewPacket {
                origin: &self.origin,
                kind: self.kind,
                group_id: self.group,
                lsn_from: Lsn::from(draft.lsn_from),
                lsn_to: Lsn::from(draft.lsn_to),
                targets: &targets,
                target_count,
                row_count: rows,
                byte_count: bytes,
            })
            .await?;
        self.group.get_or_insert(id);
        for (seq, (part, ipc)) in parts.iter().enumerate() {
            self.relay
                .insert_part(
                    id,
                    seq as i32,
                    &part.shape.name,
                    &part.target,
                    part.changes.len() as i64,
                    ipc,
                )
                .await?;
        }
        tracing::debug!(packet = id, rows, bytes, "packet written");
        crate::telemetry::packet_stored(self.origin.direction(), self.kind, rows, bytes);
        for (part, _) in &parts {
            crate::telemetry::rows_captured(&part.shape.name, part.changes.len());
        }
        self.written.packets += 1;
        self.written.rows += rows as u64;
        self.written.bytes += bytes as u64;
        crate::failpoint::hit("capture_mid_group");
        Ok(())
    }

    /// Commits the open group (if any) together with the capture position
    /// `lsn` of `slot`: the relay then holds everything up to `lsn`.
    pub(super) async fn commit_at(&mut self, slot: &str, lsn: Lsn) -> Result<()> {
        self.begin().await?;
        if let Err(e) = self.relay.set_capture_lsn(&self.origin, slot, lsn).await {
            self.abort().await;
            return Err(e);
        }
        self.commit().await
    }

    /// Commits the open group, waking the site workers when it holds packets.
    pub(super) async fn commit(&mut self) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        self.relay
            .commit(self.group.map(|_| self.origin.direction()))
            .await
    }

    /// Marks full-sync requests as served by `group`, in the open transaction.
    pub(super) async fn mark_served(&mut self, requests: &[i64], group: Option<i64>) -> Result<()> {
        self.begin().await?;
        self.relay.mark_served(requests, group).await
    }

    /// Rolls the open transaction back, if any.
    pub(super) async fn abort(&mut self) {
        if self.open {
            self.relay.rollback().await;
            self.open = false;
        }
    }
}
