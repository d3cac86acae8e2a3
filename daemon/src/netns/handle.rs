//! How the daemon keeps hold of a namespace it serves, at no fd of its own.
//!
//! A namespace must stay reachable (to bind listeners again, make DNS upstream sockets, probe
//! registrations), and the daemon must not keep it alive once its sources are gone. Holding the
//! namespace file open does both at the cost of one fd per namespace. Any socket inside the
//! namespace does it too: `SIOCGSKNS` on it yields a namespace fd on demand, and the daemon
//! holds listening sockets there anyway. So once a listener socket is up the handle lets go of
//! the file and keeps that socket instead; the manager hands the file back
//! ([`NsHandle::hold_file`]) before it closes listeners, so a socket it closes is never kept
//! open (its port bound) by the handle.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use crate::lock::lock;
use crate::sys;

/// What a handle holds the namespace by.
enum Anchor {
    /// The namespace file (while no socket of ours lives in the namespace).
    File(Arc<OwnedFd>),
    /// A socket inside the namespace, shared with the task serving it.
    Socket(Arc<dyn AsFd + Send + Sync>),
    /// Let go of: the namespace is no longer served.
    Released,
}

/// A served namespace, held by its file or by one of the daemon's sockets inside it.
pub(crate) struct NsHandle {
    anchor: Mutex<Anchor>,
}

impl fmt::Debug for NsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = match &*lock(&self.anchor) {
            Anchor::File(_) => "file",
            Anchor::Socket(_) => "socket",
            Anchor::Released => "released",
        };
        f.debug_struct("NsHandle").field("by", &by).finish()
    }
}

impl NsHandle {
    /// A handle holding the namespace by its open file.
    pub(crate) fn new(file: Arc<OwnedFd>) -> Self {
        Self {
            anchor: Mutex::new(Anchor::File(file)),
        }
    }

    /// A namespace fd to enter the namespace with: the file, or one made from the socket
    /// (closed when the caller drops it).
    pub(crate) fn open(&self) -> io::Result<Arc<OwnedFd>> {
        match &*lock(&self.anchor) {
            Anchor::File(f) => Ok(Arc::clone(f)),
            Anchor::Socket(s) => sys::netns::socket_netns(s.as_fd()).map(Arc::new),
            Anchor::Released => Err(io::Error::other("namespace no longer served")),
        }
    }

    /// Holds the namespace by `sock` (a socket inside it) instead of its file, releasing the
    /// file's fd. A handle already holding a socket keeps it.
    pub(crate) fn hold_socket(&self, sock: Arc<dyn AsFd + Send + Sync>) {
        let mut a = lock(&self.anchor);
        if matches!(*a, Anchor::File(_)) {
            *a = Anchor::Socket(sock);
        }
    }

    /// Holds the namespace by a file again, made from the socket held: called before
    /// listeners close, so the handle keeps no closed listener's socket (and port) alive.
    /// Should that fail (out of fds), the socket stays held and the error is returned.
    pub(crate) fn hold_file(&self) -> io::Result<()> {
        let mut a = lock(&self.anchor);
        if let Anchor::Socket(s) = &*a {
            let file = sys::netns::socket_netns(s.as_fd())?;
            *a = Anchor::File(Arc::new(file));
        }
        Ok(())
    }

    /// Lets go of the namespace for good (its entry is gone).
    pub(crate) fn release(&self) {
        *lock(&self.anchor) = Anchor::Released;
    }
}
