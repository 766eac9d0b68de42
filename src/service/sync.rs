//! What a sync did, as `ho sync` and `pos sync` report it: a worker's
//! summary, named by its command.

use crate::{ho, pos};

/// What one sync did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncReport<'a, T> {
    /// `ho sync` or `pos sync`.
    pub command: &'static str,
    #[serde(flatten)]
    pub summary: &'a T,
}

impl<'a> SyncReport<'a, ho::Summary> {
    /// What `ho sync` did.
    pub fn ho(summary: &'a ho::Summary) -> Self {
        SyncReport {
            command: "ho sync",
            summary,
        }
    }
}

impl<'a> SyncReport<'a, pos::Summary> {
    /// What `pos sync` did.
    pub fn pos(summary: &'a pos::Summary) -> Self {
        SyncReport {
            command: "pos sync",
            summary,
        }
    }
}
