//! The one writer of packets: every packet that enters the relay (HO's
//! deltas and full syncs, verify packets, a site's uploads) passes through
//! [`Writer::write`] or [`Writer::write_control`] once, and through
//! [`Writer::store`] in both cases: the place where a packet's parts are
//! encoded, checksummed and signed (when this side has a signing key).
//!
//! A writer holds one relay transaction per group: the packets of a group,
//! the capture position and whatever else the group settles (served
//! requests, HO's hashes) become visible together, or not at all.

use super::{NewPacket, NewPart, Relay, RelayTx};
use crate::error::{Error, Result};
use crate::packet::{encode_part, Change, TableShape};
use crate::protocol::{Lsn, Origin, PacketKind, Target};
use crate::route::ALL_SITES;
use crate::seal::{hex, Head, Header, Link, PartSeal, SigningKey};

/// One part to write: a table's changes for one target (a site, or `*`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DraftPart<'a> {
    pub(crate) shape: &'a TableShape,
    pub(crate) target: &'a str,
    pub(crate) changes: &'a [Change],
    /// The part carries its table's shape, with or without rows (a schema
    /// change with no change of a row after it): written even when empty.
    pub(crate) announced: bool,
}

/// One packet to write: its parts and the range of commit LSNs it holds.
#[derive(Debug, Clone)]
pub(crate) struct Draft<'a> {
    pub(crate) parts: Vec<DraftPart<'a>>,
    pub(crate) lsn_from: Lsn,
    pub(crate) lsn_to: Lsn,
}

/// What a writer has stored so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) packets: u64,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
}

/// Writes packets into the relay, one relay transaction per group.
pub struct Writer<'a> {
    relay: &'a Relay,
    origin: Origin,
    kind: PacketKind,
    /// The sites a `*` part is for: every registered site, or these.
    only_sites: Option<Vec<String>>,
    /// The open transaction, once anything is written.
    tx: Option<RelayTx<'a>>,
    /// The group of the open transaction, once its first packet is written.
    group: Option<i64>,
    /// The sites of the open transaction.
    sites: Vec<String>,
    /// The sites whose chains start over at these packets (a full sync of
    /// every table).
    resets: Vec<String>,
    /// The chain numbers the open transaction's packets take (target,
    /// number), recorded once it commits.
    chained: Vec<(String, Head)>,
    written: Written,
}

/// A packet's parts, encoded.
struct Encoded<'d> {
    parts: Vec<(DraftPart<'d>, Vec<u8>)>,
    targets: Vec<String>,
    for_all: bool,
    rows: i64,
    bytes: i64,
}

impl<'a> Writer<'a> {
    /// A writer of `kind` packets from `origin`.
    pub fn new(relay: &'a Relay, origin: &Origin, kind: PacketKind) -> Writer<'a> {
        Writer {
            relay,
            origin: origin.clone(),
            kind,
            only_sites: None,
            tx: None,
            group: None,
            sites: Vec::new(),
            resets: Vec::new(),
            chained: Vec::new(),
            written: Written::default(),
        }
    }

    /// Packets go to these sites only (a snapshot for the sites that asked,
    /// an upload for HO, a verify packet for the sites verified).
    pub fn for_sites(mut self, sites: Vec<String>) -> Self {
        self.only_sites = Some(sites);
        self
    }

    /// The packets reload every table at `sites`: their chains start over
    /// there (what came before is superseded).
    pub(crate) fn resetting(mut self, sites: Vec<String>) -> Self {
        self.resets = sites;
        self
    }

    /// The group being written, once its first packet is.
    pub(crate) fn group(&self) -> Option<i64> {
        self.group
    }

    /// Whether a relay transaction is open: packets of a group not committed yet.
    pub(crate) fn is_open(&self) -> bool {
        self.tx.is_some()
    }

    /// What was written so far.
    pub(crate) fn written(&self) -> Written {
        self.written
    }

    /// The open relay transaction (opened if needed), for what the group
    /// settles beside its packets.
    pub(crate) async fn tx(&mut self) -> Result<&RelayTx<'a>> {
        if self.tx.is_none() {
            let tx = self.relay.transaction().await?;
            self.group = None;
            self.sites = match &self.only_sites {
                Some(s) => s.clone(),
                None => tx.active_sites().await?,
            };
            self.tx = Some(tx);
        }
        Ok(self.tx.as_ref().expect("opened above"))
    }

    /// Writes one packet of the open group (opening it if needed). Parts for
    /// sites that are not registered are left out, and a packet for nobody
    /// is not written.
    pub(crate) async fn write(&mut self, draft: Draft<'_>) -> Result<()> {
        self.tx().await?;
        let encoded = self.encode(&draft.parts)?;
        if encoded.parts.is_empty() || encoded.targets.is_empty() {
            return Ok(());
        }
        self.store(self.kind, encoded, draft.lsn_from, draft.lsn_to)
            .await?;
        crate::failpoint::hit("capture_mid_group");
        Ok(())
    }

    /// Writes a packet without parts for every site of the writer (a
    /// verify packet, whose content the group settles beside it); None
    /// when there is no site.
    pub async fn write_control(&mut self, lsn: Lsn) -> Result<Option<i64>> {
        self.tx().await?;
        if self.sites.is_empty() {
            return Ok(None);
        }
        let encoded = Encoded {
            parts: Vec::new(),
            targets: self.sites.clone(),
            for_all: false,
            rows: 0,
            bytes: 0,
        };
        self.store(self.kind, encoded, lsn, lsn).await.map(Some)
    }

    /// Encodes the parts for registered targets.
    fn encode<'d>(&self, draft: &[DraftPart<'d>]) -> Result<Encoded<'d>> {
        let mut out = Encoded {
            parts: Vec::with_capacity(draft.len()),
            targets: Vec::new(),
            for_all: false,
            rows: 0,
            bytes: 0,
        };
        for part in draft {
            if part.changes.is_empty() && !part.announced {
                continue;
            }
            if part.target == ALL_SITES {
                out.for_all = true;
                out.targets.extend(self.sites.iter().cloned());
            } else if self.sites.iter().any(|s| s == part.target) {
                out.targets.push(part.target.to_string());
            } else {
                let _ = crate::telemetry::rows_unregistered(
                    &part.shape.name,
                    part.target,
                    part.changes.len() as u64,
                );
                continue;
            }
            let ipc = encode_part(part.shape, part.changes)
                .map_err(|source| Error::Packet { packet: 0, source })?;
            out.rows += part.changes.len() as i64;
            out.bytes += ipc.len() as i64;
            out.parts.push((*part, ipc));
        }
        out.targets.sort();
        out.targets.dedup();
        Ok(out)
    }

    /// Stores one packet and its parts in the open transaction: every
    /// packet passes here once.
    async fn store(
        &mut self,
        kind: PacketKind,
        mut p: Encoded<'_>,
        lsn_from: Lsn,
        lsn_to: Lsn,
    ) -> Result<i64> {
        // A packet for every registered site lists none of them: `*` and
        // their number (see migrations/relay/V7).
        let target_count = match (p.for_all, &self.only_sites) {
            (true, None) => {
                let count = i32::try_from(p.targets.len()).unwrap_or(i32::MAX);
                p.targets = vec![ALL_SITES.to_string()];
                Some(count)
            }
            _ => None,
        };
        let tx = self.tx.as_ref().expect("the caller opened it");
        let checksums: Vec<Vec<u8>> = p
            .parts
            .iter()
            .map(|(_, ipc)| super::checksum(ipc))
            .collect();
        // A signed packet names its own id and its place in its targets'
        // chains: taken first, under the lock.
        let (id, seal, heads) = match &self.relay.seals().key {
            Some(key) => {
                let mut read: Vec<&str> = p.targets.iter().map(String::as_str).collect();
                read.push(ALL_SITES);
                let (id, heads) = tx.next_signed(&self.origin, &read).await?;
                self.relay
                    .seals()
                    .went_back(self.origin.as_str(), &read, &heads)
                    .map_err(Error::Setup)?;
                let mut header = self.header(key, id, kind, &p, &checksums);
                header.chain = p
                    .targets
                    .iter()
                    .map(|t| Head::next(heads.get(t), t))
                    .collect();
                header.resets = self.resets.clone();
                if !header.resets.is_empty() {
                    let all = heads.get(ALL_SITES);
                    header.base = vec![Link {
                        target: ALL_SITES.to_string(),
                        seq: all.map_or(0, |h| h.seq),
                        prev: all.map_or(String::new(), |h| hex(&h.hash)),
                    }];
                }
                let (signed, signature) = key.seal(&header);
                let hash = super::checksum(&signed);
                let moved = header
                    .chain
                    .iter()
                    .map(|l| {
                        let head = Head {
                            seq: l.seq,
                            hash: hash.clone(),
                        };
                        (l.target.clone(), head)
                    })
                    .collect();
                (Some(id), Some((signed, signature)), moved)
            }
            None => (None, None, Vec::new()),
        };
        self.chained.extend(heads.iter().cloned());
        let id = tx
            .insert_packet(&NewPacket {
                origin: &self.origin,
                kind,
                group_id: self.group,
                lsn_from,
                lsn_to,
                targets: &p.targets,
                target_count,
                row_count: p.rows,
                byte_count: p.bytes,
                id,
                seal,
                heads,
            })
            .await?;
        self.group.get_or_insert(id);
        for ((seq, (part, ipc)), sum) in p.parts.iter().enumerate().zip(&checksums) {
            let part = NewPart {
                seq: seq as i32,
                table: &part.shape.name,
                target: &Target::from(part.target),
                rows: part.changes.len() as i64,
                arrow_ipc: ipc,
                checksum: sum,
            };
            tx.insert_part(id, &part).await?;
        }
        tracing::debug!(
            packet = id,
            rows = p.rows,
            bytes = p.bytes,
            "packet written"
        );
        crate::telemetry::packet_stored(self.origin.direction(), kind, p.rows, p.bytes);
        for (part, _) in &p.parts {
            crate::telemetry::rows_captured(&part.shape.name, part.changes.len());
        }
        self.written.packets += 1;
        self.written.rows += p.rows as u64;
        self.written.bytes += p.bytes as u64;
        Ok(id)
    }

    /// What the signature of packet `id` covers.
    fn header(
        &self,
        key: &SigningKey,
        id: i64,
        kind: PacketKind,
        p: &Encoded<'_>,
        checksums: &[Vec<u8>],
    ) -> Header {
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Header {
            key: key.id().to_string(),
            id,
            group: self.group.unwrap_or(id),
            origin: self.origin.as_str().to_string(),
            kind: kind.as_str().to_string(),
            targets: p.targets.clone(),
            created_at,
            chain: Vec::new(),
            resets: Vec::new(),
            base: Vec::new(),
            parts: p
                .parts
                .iter()
                .zip(checksums)
                .enumerate()
                .map(|(seq, ((part, _), sum))| PartSeal {
                    seq: seq as i32,
                    table: part.shape.name.clone(),
                    target: part.target.to_string(),
                    rows: part.changes.len() as i64,
                    sha256: hex(sum),
                })
                .collect(),
        }
    }

    /// Commits the open group (if any) together with the capture position
    /// `lsn` of `slot`: the relay then holds everything up to `lsn`.
    pub(crate) async fn commit_at(&mut self, slot: &str, lsn: Lsn) -> Result<()> {
        let origin = self.origin.clone();
        self.tx().await?.set_capture_lsn(&origin, slot, lsn).await?;
        self.commit().await
    }

    /// Commits the open group, waking the workers that read its direction
    /// when it holds packets.
    pub async fn commit(&mut self) -> Result<()> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let chained = std::mem::take(&mut self.chained);
        tx.commit(self.group.map(|_| self.origin.direction()))
            .await?;
        self.relay
            .seals()
            .committed(self.origin.as_str(), &chained)
            .await;
        Ok(())
    }

    /// Rolls the open transaction back, if any.
    pub(crate) async fn abort(&mut self) {
        // Dropping it rolls it back.
        self.tx = None;
        self.chained.clear();
    }
}
