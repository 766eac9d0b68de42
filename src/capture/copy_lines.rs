//! A `COPY … TO STDOUT` (text format) read as rows: each call gives the
//! complete lines of the next chunk, parsed; the values are slices of the
//! chunk, not copies.

use std::pin::Pin;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use super::copy_text::parse_line;
use crate::error::{DbContext, Result};
use crate::pgoutput::Tuple;
use crate::postgres::{Tx, TEXT_FORMS};

/// A read-only snapshot (REPEATABLE READ) in which HO's COPY writes values
/// as pgoutput does.
pub(crate) async fn read_tx(sql: &Client) -> std::result::Result<Tx<'_>, tokio_postgres::Error> {
    Tx::begin(
        sql,
        &format!("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {TEXT_FORMS}"),
    )
    .await
}

/// The rows of a COPY, chunk by chunk.
pub(crate) struct CopyLines {
    stream: Pin<Box<CopyOutStream>>,
    /// Bytes of a line not yet complete.
    pending: BytesMut,
    /// What is read, for errors.
    what: String,
}

impl CopyLines {
    /// Starts `copy`; `what` names what it reads in errors.
    pub(crate) async fn open(sql: &Client, copy: &str, what: String) -> Result<CopyLines> {
        let stream = sql.copy_out(copy).await.ctx(|| what.clone())?;
        Ok(CopyLines {
            stream: Box::pin(stream),
            pending: BytesMut::new(),
            what,
        })
    }

    /// The rows of the next chunk (none when it ended no line); None at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<Tuple>>> {
        let Some(chunk) = self.stream.next().await else {
            return Ok(None);
        };
        let chunk = chunk.ctx(|| self.what.clone())?;
        self.pending.extend_from_slice(&chunk);
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(Some(Vec::new()));
        };
        let lines = self.pending.split_to(end + 1).freeze();
        Ok(Some(
            lines[..end]
                .split(|&b| b == b'\n')
                .map(|line| parse_line(&lines.slice_ref(line)))
                .collect(),
        ))
    }
}
