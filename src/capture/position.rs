//! Where a capture run stands in the stream, and the decisions that follow
//! from it alone: which transactions are skipped, when what is captured is
//! stored, when an idle stretch of WAL is recorded. No IO: the loop in
//! `stream.rs` asks, then acts.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::Lsn;

/// While streaming, the longest a committed transaction waits to be stored.
pub(super) const STREAM_FLUSH_EVERY: Duration = Duration::from_millis(25);
/// The least time between two records of an idle position.
pub(super) const IDLE_RECORD_EVERY: Duration = Duration::from_secs(1);
/// How often a streaming HO capture looks for full-sync requests.
pub(super) const REQUESTS_EVERY: Duration = Duration::from_secs(1);

/// The transaction being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Txn {
    /// Its commit position.
    lsn: Lsn,
    /// Whether its changes are left out.
    skip: bool,
}

/// The positions of a capture run and the transaction it is in.
#[derive(Debug, Clone)]
pub(super) struct Position {
    /// The relay's position at start: transactions committing below it are
    /// stored already.
    relay: Lsn,
    /// Where a `Mode::Once` run stops; None while streaming.
    stop: Option<Lsn>,
    txn: Option<Txn>,
    /// The end of the last transaction captured (or idle WAL passed).
    captured: Lsn,
    /// What the relay holds and the slot is confirmed to.
    stored: Lsn,
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Committed {
    /// Its changes were captured.
    Captured,
    /// It was left out (stored already, or our own applier's).
    Skipped,
}

/// What to do at a keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Keepalive {
    /// Record the server's WAL end as the position: nothing before it is ours.
    pub(crate) record: bool,
    /// A `Mode::Once` run is done.
    pub(crate) finish: bool,
}

/// What an Origin message means for the transaction it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OriginMark {
    /// Our own applier wrote it: no echo.
    Skip,
    /// Its changes carry this origin to the sites.
    Mark(Arc<str>),
}

impl Position {
    /// A run starting from the relay's position `relay`, to `stop` if any.
    pub(super) fn new(relay: Lsn, stop: Option<Lsn>) -> Position {
        Position {
            relay,
            stop,
            txn: None,
            captured: relay,
            stored: relay,
        }
    }

    /// Whether the run streams until shutdown (rather than to a stop position).
    pub(super) fn streaming(&self) -> bool {
        self.stop.is_none()
    }

    pub(super) fn in_txn(&self) -> bool {
        self.txn.is_some()
    }

    /// Whether `lsn` is at or past the stop position.
    pub(super) fn reached_stop(&self, lsn: Lsn) -> bool {
        self.stop.is_some_and(|s| lsn >= s)
    }

    /// The end of the last transaction captured.
    pub(super) fn captured(&self) -> Lsn {
        self.captured
    }

    /// What the relay holds.
    pub(super) fn stored(&self) -> Lsn {
        self.stored
    }

    /// Whether captured transactions wait to be stored.
    pub(super) fn pending(&self) -> bool {
        self.captured > self.stored
    }

    /// A transaction committing at `lsn` begins; it is skipped when the relay
    /// holds it already. Breaks when it is past the stop position.
    pub(super) fn begin(&mut self, lsn: Lsn) -> ControlFlow<()> {
        if self.reached_stop(lsn) {
            return ControlFlow::Break(());
        }
        self.txn = Some(Txn {
            lsn,
            skip: lsn < self.relay,
        });
        ControlFlow::Continue(())
    }

    /// The transaction's Origin message: whether it is skipped or marked.
    pub(super) fn origin(&mut self, name: &str, skip_origin: Option<&str>) -> OriginMark {
        let mark = origin_mark(name, skip_origin);
        if mark == OriginMark::Skip {
            if let Some(txn) = &mut self.txn {
                txn.skip = true;
            }
        }
        mark
    }

    /// The commit position a change is captured with; None when the
    /// transaction is skipped (or there is none).
    pub(super) fn change_lsn(&self) -> Option<Lsn> {
        self.txn.filter(|t| !t.skip).map(|t| t.lsn)
    }

    /// The transaction ends at `end`.
    pub(super) fn commit(&mut self, end: Lsn) -> Committed {
        match self.txn.take() {
            Some(Txn { skip: false, .. }) | None => {
                self.captured = self.captured.max(end);
                Committed::Captured
            }
            Some(Txn { skip: true, .. }) => Committed::Skipped,
        }
    }

    /// The relay now holds everything up to `lsn`.
    pub(super) fn stored_through(&mut self, lsn: Lsn) {
        self.captured = self.captured.max(lsn);
        self.stored = lsn;
    }

    /// While streaming, whether what is captured is due to be stored at a
    /// commit, the oldest transaction not yet stored having committed
    /// `waited` ago.
    pub(super) fn flush_due(&self, waited: Duration) -> bool {
        self.streaming() && self.pending() && waited >= STREAM_FLUSH_EVERY
    }

    /// At a keepalive with the server's WAL at `wal_end`: when idle with
    /// everything stored (`batch_empty`: nothing waits in the batcher), the
    /// WAL up to there held nothing for us; it is recorded (so the slot does
    /// not keep it) at most every [`IDLE_RECORD_EVERY`] (`since_record`),
    /// and always when it finishes a `Mode::Once` run.
    pub(super) fn keepalive(
        &self,
        wal_end: Lsn,
        batch_empty: bool,
        since_record: Duration,
    ) -> Keepalive {
        let finish = !self.in_txn() && self.reached_stop(wal_end);
        let record = !self.in_txn()
            && !self.pending()
            && batch_empty
            && wal_end > self.stored
            && (finish || since_record >= IDLE_RECORD_EVERY);
        Keepalive { record, finish }
    }

    /// Whether full-sync requests may be served now: while streaming, between
    /// transactions.
    pub(super) fn may_serve_requests(&self) -> bool {
        self.streaming() && !self.in_txn()
    }
}

/// What an Origin message named `name` means, with transactions of
/// `skip_origin` skipped.
fn origin_mark(name: &str, skip_origin: Option<&str>) -> OriginMark {
    if skip_origin == Some(name) {
        OriginMark::Skip
    } else if name.starts_with(crate::MERGE_ORIGIN) {
        // HO's merges: marked so the sites log them.
        OriginMark::Mark(crate::MERGE_ORIGIN.into())
    } else {
        OriginMark::Mark(name.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(n: u64) -> Lsn {
        Lsn::from(n)
    }

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn transactions_below_the_relay_are_skipped() {
        let mut p = Position::new(lsn(100), None);
        assert!(p.begin(lsn(99)).is_continue());
        assert_eq!(p.change_lsn(), None);
        assert_eq!(p.commit(lsn(101)), Committed::Skipped);
        assert!(!p.pending());
        assert!(p.begin(lsn(100)).is_continue());
        assert_eq!(p.change_lsn(), Some(lsn(100)));
        assert_eq!(p.commit(lsn(120)), Committed::Captured);
        assert_eq!(p.captured(), lsn(120));
        assert!(p.pending());
        assert!(!p.in_txn());
    }

    #[test]
    fn our_own_origin_is_skipped_and_merges_are_marked() {
        let skip = Some("relaysync_apply_db");
        let mut p = Position::new(lsn(0), None);
        assert!(p.begin(lsn(10)).is_continue());
        let merge = format!("{}_ho", crate::MERGE_ORIGIN);
        assert_eq!(
            p.origin(&merge, skip),
            OriginMark::Mark(crate::MERGE_ORIGIN.into())
        );
        assert_eq!(p.origin("other", skip), OriginMark::Mark("other".into()));
        assert_eq!(p.change_lsn(), Some(lsn(10)));
        assert_eq!(p.origin("relaysync_apply_db", skip), OriginMark::Skip);
        assert_eq!(p.change_lsn(), None);
        assert_eq!(p.commit(lsn(20)), Committed::Skipped);
        // The next transaction is captured again.
        assert!(p.begin(lsn(30)).is_continue());
        assert_eq!(p.change_lsn(), Some(lsn(30)));
    }

    #[test]
    fn a_once_run_stops_at_its_position() {
        let mut p = Position::new(lsn(0), Some(lsn(50)));
        assert!(!p.streaming());
        assert!(p.begin(lsn(49)).is_continue());
        assert_eq!(p.commit(lsn(55)), Committed::Captured);
        assert!(p.reached_stop(lsn(55)));
        assert!(p.begin(lsn(50)).is_break());
        assert!(!p.in_txn());
    }

    #[test]
    fn storing_clears_what_is_pending() {
        let mut p = Position::new(lsn(10), None);
        assert!(p.begin(lsn(20)).is_continue());
        p.commit(lsn(25));
        p.stored_through(p.captured());
        assert_eq!(p.stored(), lsn(25));
        assert!(!p.pending());
        // An idle position recorded past what was captured moves both.
        p.stored_through(lsn(40));
        assert_eq!((p.captured(), p.stored()), (lsn(40), lsn(40)));
    }

    #[test]
    fn a_streaming_flush_is_due_when_captured_and_not_stored_recently() {
        let mut p = Position::new(lsn(0), None);
        assert!(!p.flush_due(LONG));
        assert!(p.begin(lsn(5)).is_continue());
        p.commit(lsn(6));
        assert!(!p.flush_due(Duration::from_millis(10)));
        assert!(p.flush_due(STREAM_FLUSH_EVERY));
        let mut once = Position::new(lsn(0), Some(lsn(100)));
        assert!(once.begin(lsn(5)).is_continue());
        once.commit(lsn(6));
        assert!(!once.flush_due(LONG));
    }

    #[test]
    fn an_idle_keepalive_is_recorded_at_most_every_second() {
        let p = Position::new(lsn(10), None);
        let idle = |wal, empty, since| p.keepalive(lsn(wal), empty, since).record;
        assert!(idle(20, true, IDLE_RECORD_EVERY));
        assert!(!idle(20, true, Duration::from_millis(500)));
        assert!(!idle(10, true, LONG), "nothing past what is stored");
        assert!(!idle(20, false, LONG), "the batcher holds changes");
        assert!(!p.keepalive(lsn(20), true, LONG).finish);
    }

    #[test]
    fn no_idle_record_inside_a_transaction_or_with_changes_pending() {
        let mut p = Position::new(lsn(10), None);
        assert!(p.begin(lsn(15)).is_continue());
        assert!(!p.keepalive(lsn(20), true, LONG).record);
        p.commit(lsn(16));
        assert!(!p.keepalive(lsn(20), true, LONG).record);
    }

    #[test]
    fn a_keepalive_past_the_stop_finishes_a_once_run_and_records_it() {
        let p = Position::new(lsn(10), Some(lsn(30)));
        let k = p.keepalive(lsn(30), true, Duration::ZERO);
        assert_eq!(
            k,
            Keepalive {
                record: true,
                finish: true
            }
        );
        assert!(!p.keepalive(lsn(29), true, Duration::ZERO).finish);
        let mut busy = p.clone();
        assert!(busy.begin(lsn(20)).is_continue());
        assert!(!busy.keepalive(lsn(40), true, LONG).finish);
    }

    #[test]
    fn requests_are_served_between_transactions_while_streaming() {
        let mut p = Position::new(lsn(0), None);
        assert!(p.may_serve_requests());
        assert!(p.begin(lsn(1)).is_continue());
        assert!(!p.may_serve_requests());
        assert!(!Position::new(lsn(0), Some(lsn(9))).may_serve_requests());
    }
}
