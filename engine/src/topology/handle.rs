//! The handle through which the admin API, SIGHUP and tests change a
//! running topology: reloads and replays, served one at a time by the
//! reload controller.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use super::reload::{ReloadOutcome, ReloadStatus, SharedStatus};
use super::replay::{ReplayError, ReplayOutcome};

/// Changes the running topology from outside the pipeline (the admin API,
/// SIGHUP, tests): reloads and replays, one at a time. Usable once `run`
/// has started.
#[derive(Clone, Default)]
pub struct ReloadHandle {
    inner: Arc<ReloadInner>,
}

#[derive(Default)]
struct ReloadInner {
    requests: OnceLock<mpsc::UnboundedSender<Command>>,
    status: OnceLock<SharedStatus>,
}

/// A request to the reload controller.
pub enum Command {
    Reload {
        trigger: &'static str,
        reply: oneshot::Sender<ReloadOutcome>,
    },
    Replay {
        stage: String,
        reply: oneshot::Sender<Result<ReplayOutcome, ReplayError>>,
    },
}

impl ReloadHandle {
    /// Connects the handle to the reload controller of a running pipeline:
    /// its requests arrive on the returned channel, and `status` is what
    /// [`ReloadHandle::status`] reads. A second attach is ignored.
    pub fn attach(&self, status: SharedStatus) -> mpsc::UnboundedReceiver<Command> {
        let (requests, received) = mpsc::unbounded_channel();
        let _ = self.inner.requests.set(requests);
        let _ = self.inner.status.set(status);
        received
    }

    /// Reloads now; `None` when no pipeline is running.
    pub async fn reload(&self, trigger: &'static str) -> Option<ReloadOutcome> {
        let (reply, outcome) = oneshot::channel();
        self.inner
            .requests
            .get()?
            .send(Command::Reload { trigger, reply })
            .ok()?;
        outcome.await.ok()
    }

    /// Replays a stage from the beginning of its inputs; `None` when no
    /// pipeline is running.
    pub async fn replay(&self, stage: String) -> Option<Result<ReplayOutcome, ReplayError>> {
        let (reply, outcome) = oneshot::channel();
        self.inner
            .requests
            .get()?
            .send(Command::Replay { stage, reply })
            .ok()?;
        outcome.await.ok()
    }

    /// The running generation and the last reload; `None` before `run`.
    pub fn status(&self) -> Option<ReloadStatus> {
        let status = self.inner.status.get()?;
        Some(status.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}
