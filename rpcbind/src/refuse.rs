//! Turning an acknowledged SET reply into a refusal after the fact.
//!
//! Why: the daemon learns only after [`crate::Portmapper::handle`] that it cannot keep a new
//! registration (the namespace's journal is at its size cap). It then takes the entry back and
//! must tell the client FALSE, exactly as a SET refused at the table's cap would be answered,
//! rather than drop the reply (the client would retry for nothing) or acknowledge it.

/// Rewrites a successful SET reply (`MSG_ACCEPTED`, `SUCCESS`, an XDR boolean) in place into
/// the same reply answering FALSE. Returns false, leaving `reply` untouched, when it is not
/// such a reply.
pub fn refuse_set_reply(reply: &mut [u8]) -> bool {
    let word = |at: usize| -> Option<u32> {
        let b = reply.get(at..at.checked_add(4)?)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    // xid, REPLY (1), MSG_ACCEPTED (0), verifier flavor, verifier length.
    let (Some(1), Some(0), Some(verf_len)) = (word(4), word(8), word(16)) else {
        return false;
    };
    let Some(stat_at) = usize::try_from(verf_len)
        .ok()
        .and_then(|l| l.checked_add(3))
        .map(|l| 20 + (l & !3))
    else {
        return false;
    };
    if word(stat_at) != Some(0) || reply.len() != stat_at + 8 {
        return false;
    }
    reply[stat_at + 4..].copy_from_slice(&0u32.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(verf: &[u8], stat: u32, result: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [7u32, 1, 0, 0, verf.len() as u32] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(verf);
        v.resize(v.len() + (4 - verf.len() % 4) % 4, 0);
        v.extend_from_slice(&stat.to_be_bytes());
        v.extend_from_slice(result);
        v
    }

    #[test]
    fn only_a_successful_boolean_reply_is_rewritten() {
        let mut ok = reply(&[], 0, &1u32.to_be_bytes());
        assert!(refuse_set_reply(&mut ok));
        assert_eq!(ok, reply(&[], 0, &0u32.to_be_bytes()));
        let mut padded = reply(&[1, 2, 3], 0, &1u32.to_be_bytes());
        assert!(refuse_set_reply(&mut padded));
        assert_eq!(padded, reply(&[1, 2, 3], 0, &0u32.to_be_bytes()));
        for mut other in [
            reply(&[], 1, &1u32.to_be_bytes()),
            reply(&[], 0, &[0, 0, 0, 1, 0, 0, 0, 1]),
            reply(&[], 0, &[]),
            vec![0; 10],
            Vec::new(),
        ] {
            let before = other.clone();
            assert!(!refuse_set_reply(&mut other));
            assert_eq!(other, before);
        }
    }

    /// The reply the portmapper really gives to a v4 SET over AF_LOCAL becomes FALSE.
    #[test]
    fn a_real_set_reply_is_turned_into_false() {
        use crate::{CallContext, Caller, Config, Portmapper, Transport};
        fn put(v: &mut Vec<u8>, w: u32) {
            v.extend_from_slice(&w.to_be_bytes());
        }
        fn put_str(v: &mut Vec<u8>, s: &str) {
            put(v, s.len() as u32);
            v.extend_from_slice(s.as_bytes());
            v.resize(v.len() + (4 - s.len() % 4) % 4, 0);
        }
        let mut call = Vec::new();
        for w in [9u32, 0, 2, 100_000, 4, 1, 0, 0, 0, 0, 400_000, 1] {
            put(&mut call, w);
        }
        put_str(&mut call, "local");
        put_str(&mut call, "/run/x.sock");
        put_str(&mut call, "0");
        let ctx = CallContext {
            transport: Transport::Local,
            caller: Caller::Local { uid: 0, pid: None },
            local_addr: None,
            now_unix: 0,
        };
        let mut pm = Portmapper::new::<&str, &str>(Config::default(), &[]);
        let mut out = Vec::new();
        let outcome = pm.handle(&ctx, &call, &mut out);
        assert!(outcome.should_reply());
        assert_eq!(out[out.len() - 4..], 1u32.to_be_bytes());
        assert!(refuse_set_reply(&mut out));
        assert_eq!(out[out.len() - 4..], 0u32.to_be_bytes());
    }
}
