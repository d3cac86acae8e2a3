//! Namespaces arriving in bursts: a daemon started with thousands of namespaces present gets
//! them all from the tracker's first scan at once (issue 16: 2,000 served within 1 s).
//!
//! One arrival costs two trips to the namespace thread (read its cookie, create its sockets),
//! each a wake-up of that thread and one of the runtime. For a burst the manager reads the
//! cookies of [`TRIP`] namespaces per trip and creates the sockets of as many per trip, and
//! queues all the cookie trips of a burst before waiting for the first: the namespace thread
//! works on the next trips while the manager starts services and registers sockets of the
//! earlier ones, so the two CPUs of a small machine both work.
//!
//! Behaviour is that of one arrival at a time: events keep their order (a vanish cuts the
//! burst and is applied after the arrivals before it), each namespace's bind errors, retries
//! and dual-stack fallbacks are its own ([`Manager::finish_bind`]), and a lone arrival (the
//! hot-plug case) takes the one-at-a-time path unchanged. The manager handles nothing else
//! while a burst starts (as it handled nothing else during one arrival's trips), so a burst is
//! bounded ([`BURST_MAX`]): a deletion reported meanwhile waits for at most one burst.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;

use super::Manager;
use super::listeners::{RawListener, Wanted, create_listeners};
use crate::netns::tracker::{FileId, TrackerEvent};
use crate::netns::{NetnsId, Source};
use crate::serve::ListenerSpec;
use crate::sys;

/// Most tracker events taken in one turn of the manager's loop.
pub(super) const BURST_MAX: usize = 256;

/// Namespaces per trip to the namespace thread: enough to amortise its wake-ups, few enough
/// that the manager gets the first answers early and works while the thread does the rest.
const TRIP: usize = 32;

/// A namespace file the tracker found.
struct Found {
    source: Source,
    fd: OwnedFd,
    file_id: FileId,
}

/// What one bind trip creates: per namespace, each listener's socket or error.
type Created = Vec<io::Result<Vec<io::Result<RawListener>>>>;

/// The listeners of the namespaces of one bind trip, and the trip's answer.
type BindTrip = (
    Vec<(NetnsId, Wanted)>,
    Pin<Box<dyn Future<Output = Created> + Send>>,
);

impl Manager {
    /// Applies the tracker's events in order; consecutive arrivals are started together.
    pub(super) async fn on_tracker_batch(&mut self, batch: Vec<TrackerEvent>) {
        let mut run: Vec<Found> = Vec::new();
        let mut in_run: HashSet<Source> = HashSet::new();
        for ev in batch {
            match ev {
                TrackerEvent::Appeared {
                    source,
                    fd,
                    file_id,
                } => {
                    // The same file twice (gone and back): the first arrival goes first.
                    if !in_run.insert(source.clone()) {
                        self.add_found_run(std::mem::take(&mut run)).await;
                        in_run.clear();
                        in_run.insert(source.clone());
                    }
                    run.push(Found {
                        source,
                        fd,
                        file_id,
                    });
                }
                TrackerEvent::Vanished { source } => {
                    self.add_found_run(std::mem::take(&mut run)).await;
                    in_run.clear();
                    self.remove_source(&source).await;
                }
            }
        }
        self.add_found_run(run).await;
    }

    /// Starts namespaces found by the tracker: one alone as ever, several in shared trips.
    async fn add_found_run(&mut self, mut run: Vec<Found>) {
        if run.len() <= 1 {
            if let Some(f) = run.pop() {
                self.add_found_source(f.source, f.fd, Some(f.file_id), 0)
                    .await;
            }
            return;
        }
        // A source reported again replaces its old namespace first (as `add_source_try`).
        for f in &run {
            if self.sources.contains_key(&f.source) {
                self.remove_source(&f.source).await;
            }
        }
        // Every cookie trip of the burst queued before the first answer is awaited.
        let mut cookie_trips = VecDeque::new();
        let mut rest: Vec<(Source, Arc<OwnedFd>, FileId)> = run
            .into_iter()
            .map(|f| (f.source, Arc::new(f.fd), f.file_id))
            .collect();
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(TRIP));
            let chunk = std::mem::replace(&mut rest, tail);
            let items = chunk
                .iter()
                .map(|(_, fd, _)| (Arc::clone(fd), ()))
                .collect();
            let trip = self
                .factory
                .run_in_each(items, |()| sys::netns::current_netns_cookie());
            cookie_trips.push_back((chunk, trip));
        }
        let mut bind_trips: Vec<BindTrip> = Vec::new();
        for (chunk, trip) in cookie_trips {
            let cookies = trip.await;
            self.bind_later = Some(Vec::new());
            for ((source, fd, file_id), cookie) in chunk.into_iter().zip(cookies) {
                self.cookie_retries.remove(&source);
                self.add_with_cookie(source, fd, Some(file_id), Some(0), cookie)
                    .await;
            }
            let wanted = self.bind_later.take().unwrap_or_default();
            if let Some(trip) = self.queue_binds(wanted).await {
                bind_trips.push(trip);
            }
        }
        for (wanted, trip) in bind_trips {
            let created = trip.await;
            for ((id, w), result) in wanted.into_iter().zip(created) {
                let again = self.finish_bind(id, w, result);
                if !again.is_empty() {
                    self.bind(id, again).await;
                }
            }
        }
    }

    /// Queues one trip creating the listeners of several namespaces; a namespace that cannot
    /// be entered (no handle) gets its failure recorded at once.
    async fn queue_binds(&mut self, wanted: Vec<(NetnsId, Wanted)>) -> Option<BindTrip> {
        let mut items = Vec::with_capacity(wanted.len());
        let mut kept = Vec::with_capacity(wanted.len());
        for (id, w) in wanted {
            let Some(entry) = self.namespaces.get(&id) else {
                continue;
            };
            match entry.info.handle.open() {
                Ok(fd) => {
                    let specs: Vec<ListenerSpec> = w.iter().map(|(_, s)| s.clone()).collect();
                    items.push((fd, specs));
                    kept.push((id, w));
                }
                Err(e) => {
                    let again = self.finish_bind(id, w, Err(e));
                    if !again.is_empty() {
                        self.bind(id, again).await;
                    }
                }
            }
        }
        if items.is_empty() {
            return None;
        }
        let trip = self.factory.run_in_each(items, |specs: Vec<ListenerSpec>| {
            Ok(create_listeners(&specs))
        });
        Some((kept, Box::pin(trip)))
    }
}
