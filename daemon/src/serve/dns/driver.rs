//! The per-namespace driver task: the one place that sleeps until the resolver's next
//! deadline, makes upstream sockets (a trip into the namespace), starts TCP attempts, frees
//! the sockets of timed-out attempts and closes idle ones. Started on the first miss, woken by [`DnsNs::kick`].
//!
//! Why one task: an idle namespace has no timer and no task at all; a busy one has one
//! timer, re-armed only when the earliest deadline changes.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nsaux_resolver::UpstreamTransmit;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::upstream::upstream_batch;
use super::{DnsNs, Inner, tcp};
use crate::serve::{NsInfo, contain};

/// What the driver must do before it can wait.
#[derive(Debug)]
struct DriverWork {
    /// TCP attempts to start.
    tcp_jobs: Vec<UpstreamTransmit>,
    /// Spares to make (IPv4, IPv6); 0 for none.
    make4: usize,
    make6: usize,
    /// When to wake up at the latest (the resolver's next deadline, or the spares' idle end).
    deadline: Option<Instant>,
}

/// The per-namespace driver: makes upstream sockets, starts TCP attempts, runs the timers.
/// Holds the instance only weakly while it waits, and ends when `stop` fires (namespace gone
/// or service removed), closing the upstream sockets.
async fn driver(weak: Weak<DnsNs>, ns: Arc<NsInfo>, wake: Arc<Notify>, stop: CancellationToken) {
    loop {
        if stop.is_cancelled() {
            break;
        }
        let Some(this) = weak.upgrade() else { break };
        let w = this.take_work();
        drop(this);
        for t in w.tcp_jobs {
            contain::spawn_logged(
                &ns.name,
                "dns tcp upstream attempt",
                tcp::upstream_attempt(weak.clone(), Arc::clone(&ns), stop.clone(), t),
                || {},
            );
        }
        if w.make4 > 0 || w.make6 > 0 {
            for (n, v6) in [(w.make4, false), (w.make6, true)] {
                if n == 0 {
                    continue;
                }
                let made = tokio::select! {
                    () = stop.cancelled() => break,
                    r = ns.run_in(move || upstream_batch(v6, n)) => r,
                };
                let Some(this) = weak.upgrade() else { break };
                this.spares_made(v6, made);
            }
            // Look again: new work may have come in meanwhile.
            continue;
        }
        let sleep = async {
            match w.deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = wake.notified() => {}
            () = sleep => {
                if let Some(this) = weak.upgrade() {
                    this.on_timer();
                }
            }
        }
        if stop.is_cancelled() {
            break;
        }
    }
    if let Some(this) = weak.upgrade() {
        this.driver_stopped();
    }
    tracing::debug!(netns = %ns.name, "dns: driver stopped");
}

impl DnsNs {
    /// Makes sure the driver runs and sees new work.
    pub(super) fn kick(&self, g: &mut Inner) {
        if g.driver {
            if let Some(wake) = self.wake.get() {
                wake.notify_one();
            }
            return;
        }
        if self.stop().is_cancelled() {
            return;
        }
        g.driver = true;
        // A panicking driver must not leave `g.driver` set (nothing would ever start it again):
        // its upstream state is dropped as when it stops, and the next query starts a new one.
        let weak = self.me.clone();
        contain::spawn_logged(
            &self.ns.name,
            "dns driver",
            driver(
                self.me.clone(),
                Arc::clone(&self.ns),
                Arc::clone(self.wake.get_or_init(|| Arc::new(Notify::new()))),
                self.stop().clone(),
            ),
            move || {
                if let Some(this) = weak.upgrade() {
                    this.driver_stopped();
                }
            },
        );
    }

    /// What the driver must do now, taken under the lock.
    fn take_work(&self) -> DriverWork {
        let mut g = self.lock();
        let deadline = g.resolver.poll_timeout();
        let deadline = match (deadline, g.pool.idle_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        g.armed = deadline;
        DriverWork {
            tcp_jobs: std::mem::take(&mut g.tcp_jobs),
            make4: g.pool.take_want(false),
            make6: g.pool.take_want(true),
            deadline,
        }
    }

    /// The driver ended (namespace gone or service removed): closes every upstream socket
    /// and forgets every waiter, so nothing outlives it.
    fn driver_stopped(&self) {
        let mut g = self.lock();
        g.pool.clear();
        g.routes.clear();
        g.tcp_jobs.clear();
        g.held.clear();
        g.driver = false;
        g.armed = None;
    }

    /// The resolver's earliest deadline passed.
    fn on_timer(&self) {
        let now = Instant::now();
        let limit = Duration::from_millis(self.cfg().query_timeout_ms) + Duration::from_secs(5);
        let mut g = self.lock();
        // Sockets of timed-out attempts are freed first, so the retries can use them.
        g.pool.sweep(now);
        g.resolver.handle_timeout(now);
        self.send_backlog(&mut g, now);
        self.pump(&mut g, now);
        // Belt and braces: a route whose query the resolver forgot (it was rebuilt) must not
        // pin an endpoint forever.
        g.routes
            .retain(|_, r| now.saturating_duration_since(r.since()) < limit);
    }
}

impl Inner {
    /// Whether the driver must look at new work now: it is not running, has TCP attempts to
    /// start or spares to make, or the resolver's earliest deadline moved before the one
    /// the driver sleeps until. Otherwise it wakes at `armed` anyway and sees the rest then.
    pub(super) fn driver_needed(&self) -> bool {
        if !self.driver || !self.tcp_jobs.is_empty() || self.pool.wanted() {
            return true;
        }
        match (self.resolver.poll_timeout(), self.armed) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}
