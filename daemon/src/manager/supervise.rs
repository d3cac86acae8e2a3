//! Shared fate contained: the manager sees every listener task end and every caught panic,
//! restarts listeners and rebuilds panicked services with backoff, and says so in `ns list`.
//!
//! A listener task reports how it ended (`ListenerExit`) through a [`ManagerMsg`]; a task the
//! manager itself closed is aborted and reports nothing. A task that *returned* gets its
//! listener bound again after the usual bind backoff. A service that *panicked* (on a datagram,
//! in a listener task or in a control action) is dropped for that namespace only — its
//! instance and all its sockets — and instantiated afresh after a backoff that doubles with
//! each panic in a row (1 s … 60 s), so a namespace whose traffic keeps triggering a bug costs
//! one rebuild a minute, not a hot loop. Other namespaces, and the namespace's other
//! services, keep their state and keep serving.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::listeners::{ListenerState, TaskGuard, retry_delay};
use super::{Manager, ManagerMsg};
use crate::netns::NetnsId;
use crate::serve::ListenerSpec;
use crate::serve::contain::{ListenerExit, contained};

/// After this long without trouble a listener's or service's backoff starts again from 1 s.
const QUIET_RESETS_BACKOFF: Duration = Duration::from_secs(600);

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// A fresh token naming one listener task, so an end report that arrives after the listener
/// was replaced is recognised as stale.
pub(super) fn next_token() -> u64 {
    NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
}

/// What a listener task needs to report its end to the manager.
#[derive(Debug)]
pub(super) struct Watch {
    /// The manager's queue.
    pub(super) tx: mpsc::UnboundedSender<ManagerMsg>,
    /// Namespace.
    pub(super) id: NetnsId,
    /// The namespace, for its label in the log line of a panic nobody else caught (shared,
    /// not a copy of the label per listener task: issue 16, bytes per namespace).
    pub(super) ns: std::sync::Arc<crate::serve::NsInfo>,
    /// Service.
    pub(super) service: &'static str,
    /// Listener.
    pub(super) spec: ListenerSpec,
    /// This task's token.
    pub(super) token: u64,
}

impl Watch {
    /// Spawns a listener task that tells the manager how it ended (unless aborted).
    pub(super) fn spawn(
        self,
        fut: impl Future<Output = ListenerExit> + Send + 'static,
    ) -> TaskGuard {
        // Boxed here, before the task's future captures it: captured unboxed, the task would
        // hold a slot of the inner future's size besides the box (issue 16: bytes per socket).
        let fut = contained(fut);
        TaskGuard::new(tokio::spawn(async move {
            let exit = match fut.await {
                Ok(exit) => exit,
                Err(msg) => {
                    tracing::error!(netns = %self.ns.name, service = self.service,
                        listener = %self.spec, panic = %msg, "listener task panicked");
                    ListenerExit::ServicePanicked(msg)
                }
            };
            let _ = self.tx.send(ManagerMsg::ListenerEnded {
                id: self.id,
                service: self.service,
                spec: self.spec,
                token: self.token,
                exit,
            });
        }))
    }
}

impl Manager {
    /// A listener task ended on its own: restart the listener, or rebuild its service if the
    /// service panicked.
    pub(super) async fn listener_ended(
        &mut self,
        id: NetnsId,
        service: &'static str,
        spec: ListenerSpec,
        token: u64,
        exit: ListenerExit,
    ) {
        let Some(entry) = self.namespaces.get_mut(&id) else {
            return;
        };
        let Some(slot) = entry.services.get_mut(service) else {
            return;
        };
        let (restarts, since) = match slot.listeners.get(&spec) {
            Some(ListenerState::Up {
                token: t,
                restarts,
                since,
                ..
            }) if *t == token => (*restarts, *since),
            _ => return,
        };
        let reason = match exit {
            ListenerExit::ServicePanicked(msg) => {
                self.service_panicked(id, service, &msg).await;
                return;
            }
            ListenerExit::Ended(reason) => reason,
        };
        let attempts = if since.elapsed() > QUIET_RESETS_BACKOFF {
            0
        } else {
            restarts
        };
        let delay = retry_delay(attempts);
        tracing::warn!(netns = %entry.info.name, service, listener = %spec, %reason,
            retry_in = ?delay, "listener ended unexpectedly; restarting it");
        let old = slot.listeners.insert(
            spec.clone(),
            ListenerState::Failed {
                error: format!("ended unexpectedly: {reason}; restarting"),
                attempts,
                ended: true,
            },
        );
        if let Some(old) = old {
            super::listeners::hold_file(entry);
            old.close().await;
        }
        self.send_later(delay, ManagerMsg::Retry { id, service, spec });
    }

    /// Drops `service` in namespace `id` after a caught panic (instance and sockets) and
    /// schedules its rebuild with backoff. The panic itself was logged where it was caught.
    pub(super) async fn service_panicked(&mut self, id: NetnsId, service: &'static str, msg: &str) {
        let Some(entry) = self.namespaces.get_mut(&id) else {
            return;
        };
        let Some(slot) = entry.services.get_mut(service) else {
            return;
        };
        if slot
            .last_panic
            .is_some_and(|t| t.elapsed() > QUIET_RESETS_BACKOFF)
        {
            slot.panics = 0;
        }
        slot.panics = slot.panics.saturating_add(1);
        slot.last_panic = Some(Instant::now());
        let delay = retry_delay(slot.panics - 1);
        slot.instance = Err(format!("panicked: {msg}; restarting in {delay:?}"));
        slot.rebuild_pending = true;
        let listeners = std::mem::take(&mut slot.listeners);
        tracing::warn!(netns = %entry.info.name, service, panics = slot.panics, retry_in = ?delay,
            "service dropped in this namespace after a panic; rebuilding it");
        super::listeners::hold_file(entry);
        for (_, l) in listeners {
            l.close().await;
        }
        self.send_later(delay, ManagerMsg::Rebuild { id, service });
    }

    /// Instantiates a service dropped after a panic again (if it is still down and wanted).
    pub(super) async fn rebuild(&mut self, id: NetnsId, service: &'static str) {
        let Some(slot) = self
            .namespaces
            .get_mut(&id)
            .and_then(|e| e.services.get_mut(service))
        else {
            return;
        };
        slot.rebuild_pending = false;
        if slot.instance.is_err() {
            self.apply(id).await;
        }
    }

    fn send_later(&self, delay: Duration, msg: ManagerMsg) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(msg);
        });
    }
}
