//! The answer for path-socket callers from namespaces nsaux does not serve: an RPC reply that
//! says no (MSG_DENIED / AUTH_ERROR / AUTH_TOOWEAK), not a closed connection.
//!
//! Why: libtirpc clients that find the connection closed get `SIGPIPE` on their next write and
//! die (`rpcinfo -p`); a denied reply makes them print "Authentication error; why = Client
//! credential too weak" and exit cleanly. The refusal reads whole records (TCP record marking)
//! only to learn each call's xid, within a time and count bound, and never serves anything.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::Semaphore;

/// At most this many refused connections are answered at once; more are simply closed.
pub(super) const MAX_REFUSING: usize = 32;
/// A refused connection gets this many replies at most.
const MAX_REPLIES: usize = 4;
/// A refused connection is closed after this long, whatever it does.
const REFUSE_FOR: Duration = Duration::from_secs(5);
/// Bytes of one record read at most (the rest closes the connection).
const MAX_RECORD: usize = 64 * 1024;

/// `auth_stat` AUTH_TOOWEAK: the caller may not use this portmapper from where it is.
const AUTH_TOOWEAK: u32 = 5;

/// The record-marked MSG_DENIED / AUTH_ERROR / AUTH_TOOWEAK reply to call `xid`.
pub(super) fn refusal(xid: u32) -> [u8; 24] {
    let words = [0x8000_0000 | 20, xid, 1, 1, 1, AUTH_TOOWEAK];
    let mut out = [0u8; 24];
    for (chunk, w) in out.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Answers each call on `stream` with [`refusal`] (bounded in count and time), then closes it.
/// Without a free slot of `slots`, the connection is closed at once.
pub(super) fn spawn(stream: UnixStream, slots: &Arc<Semaphore>) {
    let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSE_FOR, refuse(stream)).await;
    });
}

async fn refuse(mut stream: UnixStream) {
    for _ in 0..MAX_REPLIES {
        let Some(xid) = read_record_xid(&mut stream).await else {
            return;
        };
        if stream.write_all(&refusal(xid)).await.is_err() {
            return;
        }
    }
}

/// Reads one whole record (all fragments) and returns its first four bytes, the xid.
async fn read_record_xid(stream: &mut UnixStream) -> Option<u32> {
    let mut head = Vec::with_capacity(4);
    let mut total = 0usize;
    loop {
        let mark = stream.read_u32().await.ok()?;
        let len = (mark & 0x7fff_ffff) as usize;
        total = total.checked_add(len).filter(|t| *t <= MAX_RECORD)?;
        let mut frag = vec![0u8; len];
        stream.read_exact(&mut frag).await.ok()?;
        let need = 4usize.saturating_sub(head.len());
        head.extend(frag.iter().take(need));
        if mark & 0x8000_0000 != 0 {
            break;
        }
    }
    let bytes: [u8; 4] = head.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_a_denied_auth_error_record() {
        let r = refusal(0xdead_beef);
        let w: Vec<u32> = r
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        // last fragment, 20 bytes; xid; REPLY; MSG_DENIED; AUTH_ERROR; AUTH_TOOWEAK
        assert_eq!(w, [0x8000_0014, 0xdead_beef, 1, 1, 1, 5]);
    }

    #[tokio::test]
    async fn each_call_gets_its_refusal_even_across_fragments() {
        let (a, mut b) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        let slots = Arc::new(Semaphore::new(1));
        spawn(a, &slots);
        // One call in two fragments, then one in one.
        let mut msg = Vec::new();
        msg.extend(2u32.to_be_bytes());
        msg.extend([0x00, 0x00]);
        msg.extend((0x8000_0000u32 | 6).to_be_bytes());
        msg.extend([0x00, 0x07, 0, 0, 0, 0]);
        msg.extend((0x8000_0000u32 | 8).to_be_bytes());
        msg.extend(9u32.to_be_bytes());
        msg.extend([0u8; 4]);
        b.write_all(&msg).await.unwrap_or_else(|e| panic!("{e}"));
        let mut got = [0u8; 48];
        b.read_exact(&mut got)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got[..24], refusal(7));
        assert_eq!(got[24..], refusal(9));
    }

    #[tokio::test]
    async fn without_a_slot_the_connection_is_closed() {
        let (a, mut b) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        let slots = Arc::new(Semaphore::new(0));
        spawn(a, &slots);
        let mut buf = [0u8; 1];
        assert_eq!(b.read(&mut buf).await.unwrap_or(1), 0);
    }
}
