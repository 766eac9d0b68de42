//! A transaction on an ordinary connection that ends one way or the other:
//! committed by [`Tx::commit`], rolled back by [`Tx::rollback`], by a
//! failed commit, or when dropped (an early return, a `?`, a panic).
//!
//! The apply, the merge and every relay write go through it, so no path
//! keeps atomicity by hand with `ROLLBACK` text of its own.

use std::ops::Deref;

use futures_util::FutureExt;
use tokio_postgres::Client;

/// An open transaction on `client`. It derefs to the client: statements run
/// in the transaction until it ends.
pub(crate) struct Tx<'a> {
    client: &'a Client,
    open: bool,
}

impl<'a> Tx<'a> {
    /// Runs `begin` (`BEGIN`, with options and `SET LOCAL`s after it, in one
    /// round trip). On an error nothing stays open.
    pub(crate) async fn begin(
        client: &'a Client,
        begin: &str,
    ) -> std::result::Result<Tx<'a>, tokio_postgres::Error> {
        debug_assert!(begin.trim_start().to_uppercase().starts_with("BEGIN"));
        match client.batch_execute(begin).await {
            Ok(()) => Ok(Tx { client, open: true }),
            Err(e) => {
                // A statement after BEGIN failed: the transaction is open
                // and aborted (a lost connection has none).
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    /// Commits.
    pub(crate) async fn commit(self) -> std::result::Result<(), tokio_postgres::Error> {
        self.commit_after("").await
    }

    /// Runs `last` (statements that end the transaction's work: the
    /// position, a NOTIFY) and commits, in one round trip; on an error the
    /// transaction is rolled back.
    pub(crate) async fn commit_after(
        mut self,
        last: &str,
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let sql = if last.is_empty() {
            "COMMIT".to_string()
        } else {
            format!("{last}; COMMIT")
        };
        let result = self.client.batch_execute(&sql).await;
        if result.is_ok() {
            self.open = false;
        }
        // Else Drop rolls back: a failed statement leaves the transaction
        // open and aborted.
        result
    }

    /// Rolls back and waits for it.
    pub(crate) async fn rollback(mut self) {
        self.open = false;
        let _ = self.client.batch_execute("ROLLBACK").await;
    }
}

impl Deref for Tx<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Polled once, the query is encoded and queued on the
            // connection, which sends it whether or not anyone waits for
            // the answer; later statements queue behind it.
            let _ = self.client.batch_execute("ROLLBACK").now_or_never();
        }
    }
}
