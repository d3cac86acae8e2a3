//! Panic containment: one namespace's bug must not take the others down with it.
//!
//! Release builds unwind (`panic = "unwind"` in the workspace profile), so a panic can be
//! caught where one namespace's work is done: around each datagram in `udp.rs`, around each
//! connection in `stream.rs`, around a control action and around every listener task in the
//! manager. What catches it logs it once with the namespace and lets the manager drop and
//! rebuild that namespace's service; every other namespace keeps its state and its sockets.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, PanicHookInfo, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// How many [`call`]s are running on this thread: a panic inside one is caught and logged
    /// by its catcher (with the namespace), so the panic hook stays quiet about it.
    static CONTAINED: Cell<u32> = const { Cell::new(0) };
    /// Where the last contained panic on this thread happened, for the catcher's log line.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs a panic hook that leaves contained panics to their catcher (which logs them once,
/// with the namespace and the panic's location) and reports every other panic as before.
pub(crate) fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
        if CONTAINED.with(Cell::get) > 0 {
            let at = info.location().map(ToString::to_string);
            LOCATION.with(|l| *l.borrow_mut() = at);
        } else {
            previous(info);
        }
    }));
}

/// Why a listener task ended: the manager restarts the listener, or rebuilds the service
/// when the service itself panicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenerExit {
    /// The task returned (its socket failed, or a test asked it to).
    Ended(String),
    /// The service panicked while handling this listener's traffic (caught and logged).
    ServicePanicked(String),
}

/// The text of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// Runs `f`, turning a panic into `Err(message)`. The state `f` touched is the caller's to
/// throw away (hence `AssertUnwindSafe`): callers drop the namespace's service afterwards.
pub(crate) fn call<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    CONTAINED.with(|c| c.set(c.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(c.get().saturating_sub(1)));
    r.map_err(|p| {
        let msg = panic_message(p.as_ref());
        match LOCATION.with(|l| l.borrow_mut().take()) {
            Some(at) => format!("{msg} (at {at})"),
            None => msg,
        }
    })
}

/// A future that resolves to `Err(message)` instead of unwinding out of its task, so a task
/// that panics can report how it ended (tokio would only tell its `JoinHandle`).
#[derive(Debug)]
pub(crate) struct Contained<F>(Pin<Box<F>>);

/// Wraps `fut` so that a panic while polling it becomes `Err(message)`.
pub(crate) fn contained<F: Future>(fut: F) -> Contained<F> {
    Contained(Box::pin(fut))
}

impl<F: Future> Future for Contained<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match call(move || inner.poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(msg) => Poll::Ready(Err(msg)),
        }
    }
}

/// Spawns a service's background task (upstream sockets and attempts, the liveness loop, a
/// sweep) so that a panic in it ends only that task and is logged once with the namespace:
/// tokio alone would leave it in a `JoinHandle` nobody reads. `on_panic` runs after the log,
/// for a task whose owner must forget it (the DNS driver).
pub(crate) fn spawn_logged<F>(
    netns: &str,
    what: &'static str,
    fut: F,
    on_panic: impl FnOnce() + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let netns = netns.to_owned();
    // Boxed before the task captures it, so the task holds a pointer, not a second slot of
    // the future's size.
    let fut = contained(fut);
    tokio::spawn(async move {
        if let Err(msg) = fut.await {
            tracing::error!(netns = %netns, task = what, panic = %msg, "background task panicked; it ended alone");
            on_panic();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_turns_a_panic_into_its_message() {
        assert_eq!(call(|| 7), Ok(7));
        let r: Result<(), String> = call(|| panic!("boom {}", 1));
        assert_eq!(r, Err("boom 1".to_owned()));
        install_panic_hook();
        let r: Result<(), String> = call(|| panic!("here"));
        let msg = r.expect_err("panicked");
        assert!(msg.starts_with("here (at "), "{msg}");
        assert!(msg.contains("contain.rs"), "{msg}");
    }

    #[tokio::test]
    async fn spawn_logged_survives_a_panic_and_runs_on_panic() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let h = spawn_logged(
            "a",
            "test",
            async { panic!("in the background") },
            move || {
                let _ = tx.send(());
            },
        );
        assert!(h.await.is_ok(), "the panic stays inside the task");
        assert!(rx.await.is_ok(), "on_panic ran");
    }

    #[tokio::test]
    async fn contained_future_reports_a_panic() {
        assert_eq!(contained(async { 3 }).await, Ok(3));
        let r = contained(async {
            tokio::task::yield_now().await;
            panic!("later");
        })
        .await;
        assert!(r.expect_err("panicked").starts_with("later"));
    }
}
