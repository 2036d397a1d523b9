//! Answers to queued writes. Both stores queue their writes to one writer
//! (a thread for SQLite, a task for PostgreSQL) that applies many in one
//! transaction; each caller waits on a oneshot channel for the result of
//! its own operation, sent once that transaction committed (or failed).

use tokio::sync::oneshot;

use super::{ClaimedDelivery, ItemStored, StoreResult, unavailable};

pub(crate) type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// Where an operation's result goes.
pub(crate) enum ReplyTo {
    Enqueued(Reply<Vec<ItemStored>>),
    Claimed(Reply<Vec<ClaimedDelivery>>),
    Unit(Reply<()>),
    Count(Reply<u64>),
    PruneStep(Reply<PruneStep>),
}

/// One step of a pruning pass done in small transactions (SQLite).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PruneStep {
    pub(crate) deleted: u64,
    /// Where the next step starts (events after this `seq`); `None` when
    /// the pass is over.
    pub(crate) next_after: Option<i64>,
}

impl ReplyTo {
    /// The caller gave up (its deadline passed): nothing to write for it.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Self::Enqueued(r) => r.is_closed(),
            Self::Claimed(r) => r.is_closed(),
            Self::Unit(r) => r.is_closed(),
            Self::Count(r) => r.is_closed(),
            Self::PruneStep(r) => r.is_closed(),
        }
    }
}

/// The result of one operation.
pub(crate) enum Done {
    Enqueued(Vec<ItemStored>),
    Claimed(Vec<ClaimedDelivery>),
    Unit,
    Count(u64),
    PruneStep(PruneStep),
    /// The operation (or its transaction) failed: `Unavailable` to the caller.
    Failed(String),
}

impl Done {
    pub(crate) fn from_result<T, E: std::fmt::Display>(
        result: Result<T, E>,
        ok: impl FnOnce(T) -> Done,
    ) -> Done {
        result.map_or_else(|e| Done::Failed(e.to_string()), ok)
    }

    pub(crate) fn failed(&self) -> bool {
        matches!(self, Done::Failed(_))
    }

    /// Answers the caller; one who stopped waiting is not an error.
    pub(crate) fn send(self, reply: ReplyTo) {
        fn answer<T>(reply: Reply<T>, value: Result<T, String>) {
            let _ = reply.send(value.map_err(unavailable));
        }
        match (reply, self) {
            (ReplyTo::Enqueued(r), Done::Enqueued(v)) => answer(r, Ok(v)),
            (ReplyTo::Claimed(r), Done::Claimed(v)) => answer(r, Ok(v)),
            (ReplyTo::Unit(r), Done::Unit) => answer(r, Ok(())),
            (ReplyTo::Count(r), Done::Count(v)) => answer(r, Ok(v)),
            (ReplyTo::PruneStep(r), Done::PruneStep(v)) => answer(r, Ok(v)),
            (reply, done) => {
                let error = match done {
                    Done::Failed(e) => e,
                    _ => "internal error: a reply of the wrong kind".to_owned(),
                };
                match reply {
                    ReplyTo::Enqueued(r) => answer(r, Err(error)),
                    ReplyTo::Claimed(r) => answer(r, Err(error)),
                    ReplyTo::Unit(r) => answer(r, Err(error)),
                    ReplyTo::Count(r) => answer(r, Err(error)),
                    ReplyTo::PruneStep(r) => answer(r, Err(error)),
                }
            }
        }
    }
}
