//! The capture loop: reads a slot's stream and stores what it carries, one
//! method per event, with one way to store and confirm ([`Capture::store`]).
//! The invariants are in the module docs of [`crate::capture`].

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio_postgres::Client;

use super::batch::{Batcher, Bounds};
use super::follow::follow;
use super::position::{Committed, OriginMark, Position, REQUESTS_EVERY, STREAM_FLUSH_EVERY};
use super::slot::{self, Event, SlotStream};
use super::{shape, snapshot, Mode, Outcome, Source};
use crate::error::Result;
use crate::pgoutput::{self, Message, Relation};
use crate::protocol::{Lsn, Origin, PacketKind};
use crate::relay::writer::Writer;
use crate::relay::Relay;
use crate::route::{Route, Tree};

/// A streaming capture stores what it holds once the server has sent
/// nothing for this long.
const IDLE_FLUSH: Duration = Duration::from_millis(2);

/// How often a long transaction's progress is logged, at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Captures changes of `tables` from `source` into the relay.
pub(crate) async fn capture(
    sql: &Client,
    relay: &Relay,
    source: &Source,
    tables: &[(String, Route)],
    bounds: Bounds,
    mode: Mode,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Outcome> {
    let relay_lsn = relay.capture_lsn(&source.origin).await?;
    let slot_lsn = slot::position(sql, &source.slot, &source.origin).await?;
    let stop = match mode {
        Mode::Once => {
            let stop = slot::current_wal(sql).await?;
            tracing::debug!(slot = %slot_lsn, relay = %relay_lsn, stop = %stop, "capture bounds");
            let from = slot_lsn.max(relay_lsn);
            if from >= stop {
                return Ok(Outcome {
                    confirmed_lsn: from,
                    ..Outcome::default()
                });
            }
            Some(stop)
        }
        Mode::Stream { .. } => None,
    };
    tracing::info!(origin = %source.origin, slot = %source.slot, from = %relay_lsn.max(slot_lsn),
        to = %stop.map(|s| s.to_string()).unwrap_or_else(|| "streaming".into()), "capture starting");
    let tree = Tree::load(sql, tables).await?;
    let mut batcher = Batcher::new(bounds);
    super::parents::load(sql, &tree, batcher.parents_mut()).await?;
    let stream = SlotStream::connect(source, relay_lsn).await?;
    let position = Position::new(relay_lsn, stop);
    let mut capture = Capture::new(sql, relay, source, tables, batcher, stream, position);
    capture.tree = tree;
    let result = capture.run(mode, &mut shutdown).await;
    capture.finish(result).await
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Event(Result<Event>),
    Tick,
    /// The stream has said nothing for a while.
    Quiet,
}

/// The state of one capture run.
struct Capture<'a> {
    sql: &'a Client,
    relay: &'a Relay,
    source: &'a Source,
    tables: &'a [(String, Route)],
    routes: HashMap<&'a str, &'a Route>,
    /// The links of the tables routed by parent.
    tree: Tree,
    bounds: Bounds,
    stream: SlotStream,
    batcher: Batcher,
    writer: Writer<'a>,
    position: Position,
    /// Transactions and changes seen (the writer counts what it stored).
    seen: Outcome,
    /// When the oldest captured transaction not yet stored committed.
    pending_since: Option<Instant>,
    /// When captured transactions were last stored.
    last_store: Option<Instant>,
    /// When an idle position was last recorded.
    last_idle_record: Instant,
    /// When full-sync requests were last looked for (None: at once).
    last_requests_check: Option<Instant>,
    last_progress: Instant,
    /// When the stream last said something (or the loop was last busy
    /// storing): its silence is measured from here.
    heard: Instant,
    /// Whether a heartbeat was sent since `heard`.
    pinged: bool,
}

impl<'a> Capture<'a> {
    fn new(
        sql: &'a Client,
        relay: &'a Relay,
        source: &'a Source,
        tables: &'a [(String, Route)],
        batcher: Batcher,
        stream: SlotStream,
        position: Position,
    ) -> Capture<'a> {
        let mut writer = Writer::new(relay, &source.origin, PacketKind::Delta);
        if let Some(targets) = &source.targets {
            writer = writer.for_sites(targets.clone());
        }
        let now = Instant::now();
        Capture {
            sql,
            relay,
            source,
            tables,
            routes: tables.iter().map(|(n, r)| (n.as_str(), r)).collect(),
            tree: Tree::default(),
            bounds: batcher.bounds(),
            stream,
            batcher,
            writer,
            position,
            seen: Outcome::default(),
            pending_since: None,
            last_store: None,
            last_idle_record: now,
            last_requests_check: None,
            last_progress: now,
            heard: now,
            pinged: false,
        }
    }

    /// Reads events until the stop position, the end of the stream or
    /// shutdown (which waits for the end of the transaction being read).
    async fn run(&mut self, mode: Mode, shutdown: &mut watch::Receiver<bool>) -> Result<()> {
        let linger = match mode {
            Mode::Stream { linger } => linger,
            Mode::Once => Duration::from_secs(3600),
        };
        // One ticker, not a timer per event: the stream carries up to a
        // message per row.
        let mut tick = tokio::time::interval(linger);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The server sends committed transactions in bursts: what a burst
        // carried is stored as soon as it ends (no event for IDLE_FLUSH),
        // rather than at the next tick. Reset at each commit, not per row.
        let idle = tokio::time::sleep(linger);
        tokio::pin!(idle);
        let mut idle_armed = false;
        let quiet = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(quiet);
        loop {
            quiet.as_mut().reset(self.quiet_deadline().into());
            if self.requests_due() {
                self.serve_requests().await?;
            }
            let in_txn = self.position.in_txn();
            let streaming = self.position.streaming();
            let wake = tokio::select! {
                biased;
                _ = crate::shutdown::requested(shutdown), if !in_txn => Wake::Shutdown,
                event = self.stream.recv() => Wake::Event(event),
                _ = tick.tick(), if streaming => Wake::Tick,
                _ = &mut idle, if idle_armed => Wake::Tick,
                _ = &mut quiet => Wake::Quiet,
            };
            let committed = matches!(wake, Wake::Event(Ok(Event::Commit { .. })));
            let flow = match wake {
                Wake::Shutdown => ControlFlow::Break(()),
                Wake::Event(event) => {
                    let event = event?;
                    self.heard();
                    self.on_event(event).await?
                }
                Wake::Tick => self.on_tick().await?,
                Wake::Quiet => self.on_quiet().await?,
            };
            idle_armed = streaming && !self.position.in_txn() && self.position.pending();
            if idle_armed && committed {
                idle.as_mut().reset(self.idle_deadline().into());
            }
            if flow.is_break() {
                break;
            }
        }
        if !self.position.in_txn() && self.position.pending() {
            self.store(self.position.captured()).await?;
        }
        Ok(())
    }

    /// When what is held is stored if nothing more comes: IDLE_FLUSH after
    /// the last message, and no sooner than STREAM_FLUSH_EVERY after the
    /// last store, so that a steady stream makes a packet per
    /// STREAM_FLUSH_EVERY (each is fetched by every site), not one per
    /// pause between commits.
    fn idle_deadline(&self) -> Instant {
        let idle = Instant::now() + IDLE_FLUSH;
        match self.last_store {
            Some(t) => idle.max(t + STREAM_FLUSH_EVERY),
            None => idle,
        }
    }

    /// The stream said something: the worker is getting somewhere.
    fn heard(&mut self) {
        self.quiet_from_now();
        crate::health::delivered();
    }

    /// The stream's silence is measured from now.
    fn quiet_from_now(&mut self) {
        self.heard = Instant::now();
        self.pinged = false;
    }

    /// When the stream's silence calls for a heartbeat (a third of the
    /// deadline), then for giving it up (the deadline).
    fn quiet_deadline(&self) -> Instant {
        let deadline = crate::postgres::deadline();
        match self.pinged {
            false => self.heard + deadline / 3,
            true => self.heard + deadline,
        }
    }

    /// The stream has been silent: an idle server sends nothing (it hears
    /// our confirmations), so a heartbeat makes it speak; silent past the
    /// deadline even so, the stream is dead.
    async fn on_quiet(&mut self) -> Result<ControlFlow<()>> {
        let deadline = self.heard + crate::postgres::deadline();
        let silent = || crate::error::Error::StreamSilent {
            role: self.source.origin.role(),
            silent: self.heard.elapsed(),
        };
        if Instant::now() >= deadline {
            crate::telemetry::connection_lost(self.source.origin.role());
            return Err(silent());
        }
        if !self.pinged {
            // On a connection of the same server: lost too, perhaps.
            let ping = slot::heartbeat(self.sql);
            if tokio::time::timeout_at(deadline.into(), ping)
                .await
                .is_err()
            {
                crate::telemetry::connection_lost(self.source.origin.role());
                return Err(silent());
            }
            self.pinged = true;
        }
        Ok(ControlFlow::Continue(()))
    }

    async fn on_event(&mut self, event: Event) -> Result<ControlFlow<()>> {
        match event {
            Event::Begin { final_lsn } => Ok(self.on_begin(final_lsn)),
            Event::Data(data) => {
                self.on_data(data).await?;
                Ok(ControlFlow::Continue(()))
            }
            Event::Partitions(content) => {
                self.on_partitions(&content)?;
                self.write_sealed().await?;
                Ok(ControlFlow::Continue(()))
            }
            Event::Shape(content) => {
                self.on_shape(&content)?;
                self.write_sealed().await?;
                Ok(ControlFlow::Continue(()))
            }
            Event::Commit { end_lsn } => self.on_commit(end_lsn).await,
            Event::KeepAlive { wal_end } => self.on_keepalive(wal_end).await,
            Event::Stopped => Ok(ControlFlow::Break(())),
            Event::Ignored => Ok(ControlFlow::Continue(())),
        }
    }

    fn on_begin(&mut self, final_lsn: Lsn) -> ControlFlow<()> {
        let flow = self.position.begin(final_lsn);
        if flow.is_continue() {
            self.batcher.set_origin(None);
        }
        flow
    }

    /// A pgoutput message; packets it completes are written to the open group.
    async fn on_data(&mut self, data: Bytes) -> Result<()> {
        match pgoutput::decode(data)? {
            Message::Relation(rel) => self.on_relation(&rel).await?,
            Message::Origin { name, .. } => self.on_origin(&name),
            message => self.on_change(message),
        }
        self.write_sealed().await?;
        // The clock is read once per 4096 changes: per change, it shows in profiles.
        if self.seen.changes.is_multiple_of(4096) && self.last_progress.elapsed() > PROGRESS_EVERY {
            self.last_progress = Instant::now();
            let packets = self.writer.written().packets;
            tracing::info!(changes = self.seen.changes, packets, "capturing");
        }
        Ok(())
    }

    /// Writes the packets the batcher sealed to the open group.
    async fn write_sealed(&mut self) -> Result<()> {
        for draft in self.batcher.take_sealed() {
            self.writer.write(draft.to_write()).await?;
        }
        Ok(())
    }

    /// A table's shape, sent before its first change (and again when it changes).
    async fn on_relation(&mut self, rel: &Relation) -> Result<()> {
        let name = format!("{}.{}", rel.namespace, rel.name);
        if let Some(route) = self.routes.get(name.as_str()) {
            let table = shape::of_relation(self.sql, rel, &name).await?;
            self.batcher
                .relation(rel.id, shape::captured(table, route, &self.tree)?);
        }
        Ok(())
    }

    /// A synced table's shape announced by HO's worker (a schema change
    /// with no change of a row after it): it goes to every site, in an empty
    /// part at this position of the stream.
    fn on_shape(&mut self, content: &[u8]) -> Result<()> {
        let Some(lsn) = self.position.change_lsn() else {
            return Ok(());
        };
        let (rel, table) = shape::from_message(content)?;
        if let Some(route) = self.routes.get(table.name.as_str()) {
            let captured = shape::captured(table, route, &self.tree)?;
            self.batcher.relation(rel, captured);
            self.batcher.announce(rel, u64::from(lsn));
        }
        Ok(())
    }

    /// A synced partitioned table's partitions, announced by HO's event
    /// trigger where one was made or attached: they go to every site, at
    /// this position, before any row of the new partition.
    fn on_partitions(&mut self, content: &[u8]) -> Result<()> {
        let Some(lsn) = self.position.change_lsn() else {
            return Ok(());
        };
        let (root, partitions) = shape::partitions_from_message(content)?;
        if self.routes.contains_key(root.as_str()) {
            self.batcher
                .announce_partitions(root, partitions, u64::from(lsn));
        }
        Ok(())
    }

    fn on_origin(&mut self, name: &str) {
        let skip_origin = self.source.skip_origin.as_deref();
        if let OriginMark::Mark(origin) = self.position.origin(name, skip_origin) {
            self.batcher.set_origin(Some(origin));
        }
    }

    /// A change of a captured transaction goes to the batcher.
    fn on_change(&mut self, message: Message) {
        let Some(lsn) = self.position.change_lsn() else {
            return;
        };
        let lsn = u64::from(lsn);
        match message {
            Message::Insert { relation, new } => self.batcher.insert(relation, new, lsn),
            Message::Update { relation, old, new } => self.batcher.update(relation, old, new, lsn),
            Message::Delete { relation, old, .. } => self.batcher.delete(relation, old, lsn),
            Message::Truncate { relations, .. } => self.batcher.truncate(&relations, lsn),
            _ => return,
        }
        self.seen.changes += 1;
    }

    async fn on_commit(&mut self, end_lsn: Lsn) -> Result<ControlFlow<()>> {
        let moves = self.batcher.end_transaction();
        if !moves.is_empty() {
            let (sql, tree) = (self.sql, &self.tree);
            follow(sql, tree, &mut self.batcher, &mut self.writer, moves).await?;
        }
        match self.position.commit(end_lsn) {
            Committed::Skipped => self.seen.skipped_transactions += 1,
            Committed::Captured => {
                self.seen.transactions += 1;
                self.pending_since.get_or_insert_with(Instant::now);
                // A group in progress (a large transaction) is stored at its commit.
                if self.writer.is_open() {
                    self.store(self.position.captured()).await?;
                }
            }
        }
        if self.position.reached_stop(end_lsn) {
            return Ok(ControlFlow::Break(()));
        }
        // While streaming, a busy stream is stored at least this often.
        let waited = self.pending_since.map_or(Duration::ZERO, |t| t.elapsed());
        if self.position.flush_due(waited) {
            self.store(self.position.captured()).await?;
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Idle with everything captured stored: the WAL up to `wal_end` held
    /// nothing for us. That is recorded in the relay and confirmed, so the
    /// slot does not keep that WAL.
    async fn on_keepalive(&mut self, wal_end: Lsn) -> Result<ControlFlow<()>> {
        let keepalive = self.position.keepalive(
            wal_end,
            self.batcher.is_empty(),
            self.last_idle_record.elapsed(),
        );
        if keepalive.record {
            self.store(wal_end).await?;
            self.last_idle_record = Instant::now();
        }
        Ok(if keepalive.finish {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    }

    /// While streaming, what is pending is stored every `linger` between
    /// transactions.
    async fn on_tick(&mut self) -> Result<ControlFlow<()>> {
        if !self.position.in_txn() && self.position.pending() {
            self.store(self.position.captured()).await?;
        }
        Ok(ControlFlow::Continue(()))
    }

    fn requests_due(&self) -> bool {
        self.source.origin == Origin::Ho
            && self.position.may_serve_requests()
            && self
                .last_requests_check
                .is_none_or(|t| t.elapsed() >= REQUESTS_EVERY)
    }

    /// Serves full-sync requests, once everything captured is stored (see
    /// snapshot.rs for why).
    async fn serve_requests(&mut self) -> Result<()> {
        self.last_requests_check = Some(Instant::now());
        if self.position.pending() {
            self.store(self.position.captured()).await?;
        }
        snapshot::serve(self.sql, self.relay, self.tables, self.bounds).await?;
        Ok(())
    }

    /// Stores what is pending and the position `through` in one relay
    /// transaction, then confirms `through` to the slot: the one way
    /// anything captured reaches the relay and the slot moves.
    async fn store(&mut self, through: Lsn) -> Result<()> {
        let captured = self.position.pending();
        let started = Instant::now();
        self.batcher.seal();
        self.write_sealed().await?;
        self.writer.commit_at(&self.source.slot, through).await?;
        if captured {
            self.pending_since = None;
            self.last_store = Some(Instant::now());
            crate::telemetry::capture_flushed(started.elapsed());
            crate::failpoint::hit("capture_after_relay_commit");
        }
        self.position.stored_through(through);
        self.stream.confirm(through);
        // Time spent storing is not the stream's silence.
        self.quiet_from_now();
        Ok(())
    }

    /// Ends the run: a transaction cut short by shutdown is not stored (the
    /// slot replays it next time); on success, waits for the last
    /// confirmation to be sent.
    async fn finish(mut self, result: Result<()>) -> Result<Outcome> {
        self.writer.abort().await;
        if let Err(e) = result {
            self.stream.abort();
            return Err(e);
        }
        let stored = self.position.stored();
        self.stream.finish(stored).await;
        let written = self.writer.written();
        Ok(Outcome {
            packets: written.packets,
            rows: written.rows,
            bytes: written.bytes,
            confirmed_lsn: stored,
            ..self.seen
        })
    }
}
