//! Turns serde's messages into an operator's words: `integer from 0 to 65535`, not `u16`; an
//! unknown key answered with the valid keys of its table, written as they are in the file.
//! Serde already quotes the bad value (`invalid type: string "eighty"`); only the Rust type
//! names and the field wording are rewritten here.

/// The daemon-wide keys and the service sections: what an unknown top-level key is told.
const TOP_LEVEL_KEYS: &str = "host_netns, netns_dirs, worker_threads, receive_coalesce_us, \
     quiet_lane_cpu_percent, netns, limits, observe, hooks, ident, rpcbind, ntp, dns";

/// Rust type names as serde writes them after `expected`, and what a TOML author reads instead.
const TYPE_WORDS: [(&str, &str); 10] = [
    ("expected u8", "expected an integer from 0 to 255"),
    ("expected u16", "expected an integer from 0 to 65535"),
    ("expected u32", "expected an integer from 0 to 4294967295"),
    ("expected u64", "expected a non-negative integer"),
    ("expected usize", "expected a non-negative integer"),
    ("expected i8", "expected an integer from -128 to 127"),
    ("expected i64", "expected an integer"),
    ("expected a sequence", "expected an array"),
    ("expected a boolean", "expected true or false"),
    ("expected a map", "expected a table"),
];

/// Rewrites one serde/toml message for an operator. `top_level`: the message is about a key of
/// the file's root table (whose valid keys serde does not know in full: the daemon-wide keys
/// are read apart from the service sections).
pub(crate) fn explain(message: &str, top_level: bool) -> String {
    let mut m = message.to_owned();
    for (rust, words) in TYPE_WORDS {
        m = replace_word(&m, rust, words);
    }
    // toml's own messages put the field after a snippet of the file: keep what comes before.
    if let Some(at) = m.find("unknown field ") {
        let (before, rest) = m.split_at(at);
        let rest = &rest["unknown field ".len()..];
        let (key, _) = rest.split_once(',').unwrap_or((rest, ""));
        let key = key.trim();
        if top_level {
            return format!("{before}unknown key {key}; valid top-level keys: {TOP_LEVEL_KEYS}");
        }
        let valid = rest
            .split_once("expected one of ")
            .or_else(|| rest.split_once("expected "))
            .map_or_else(String::new, |(_, v)| {
                v.replace('`', "").replace(" or ", ", ")
            });
        return if valid.is_empty() || valid.starts_with("there are no fields") {
            format!("{before}unknown key {key}; this table has no keys")
        } else {
            format!("{before}unknown key {key}; valid keys: {valid}")
        };
    }
    m
}

/// Replaces `from` only where it ends a word (`expected u16` but not `expected u160`).
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        let ends_word = !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        out.push_str(&rest[..i]);
        out.push_str(if ends_word { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::explain;
    use crate::config::Config;

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            explain("invalid type: string \"x\", expected u16", false),
            "invalid type: string \"x\", expected an integer from 0 to 65535"
        );
        assert_eq!(explain("expected u160", false), "expected u160");
    }

    #[test]
    fn errors_quote_the_value_list_the_keys_and_say_integer() {
        let e = Config::from_toml("[ident]\nport = \"eighty\"\n", None)
            .expect_err("must fail")
            .to_string();
        assert!(e.contains("\"eighty\""), "{e}");
        assert!(e.contains("integer"), "{e}");
        assert!(!e.contains("u16"), "{e}");
        let e = Config::from_toml("[ident]\nport = 70000\n", None)
            .expect_err("must fail")
            .to_string();
        assert!(
            e.contains("70000") && e.contains("integer") && !e.contains("u16"),
            "{e}"
        );
        let e = Config::from_toml("[ident]\nprot = 1\n", None)
            .expect_err("must fail")
            .to_string();
        assert!(e.contains("prot"), "{e}");
        assert!(
            e.contains("valid keys: enabled, port, addresses, udp, tcp"),
            "{e}"
        );
        let e = Config::from_toml("bogus = 1\n", None)
            .expect_err("must fail")
            .to_string();
        assert!(
            e.contains("bogus") && e.contains("worker_threads") && e.contains("dns"),
            "{e}"
        );
        let e = Config::from_toml("worker_threads = \"two\"\n", None)
            .expect_err("must fail")
            .to_string();
        assert!(e.contains("\"two\"") && !e.contains("usize"), "{e}");
    }

    #[test]
    fn port_and_worker_threads_zero_are_rejected() {
        for (bad, field) in [
            ("[ident]\nport = 0\n", "ident.port"),
            ("[rpcbind]\nport = 0\n", "rpcbind.port"),
            ("[ntp]\nport = 0\n", "ntp.port"),
            ("[dns]\nport = 0\n", "dns.port"),
            ("[[netns]]\nmatch = \"a\"\ndns = { port = 0 }\n", "dns.port"),
            ("worker_threads = 0\n", "worker_threads"),
            ("worker_threads = 65\n", "worker_threads"),
            ("receive_coalesce_us = 1001\n", "receive_coalesce_us"),
            ("receive_coalesce_us = -1\n", "receive_coalesce_us"),
            ("quiet_lane_cpu_percent = 101\n", "quiet_lane_cpu_percent"),
            ("quiet_lane_cpu_percent = -5\n", "quiet_lane_cpu_percent"),
        ] {
            let e = Config::from_toml(bad, None).expect_err(bad).to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
        let c = Config::from_toml("worker_threads = 64\n", None).expect("valid");
        assert_eq!(c.worker_threads, 64);
        assert_eq!(c.receive_coalesce_us, 100, "the default");
        for (text, us) in [
            ("receive_coalesce_us = 0\n", 0),
            ("receive_coalesce_us = 1000\n", 1000),
        ] {
            let c = Config::from_toml(text, None).expect(text);
            assert_eq!(c.receive_coalesce_us, us, "{text}");
        }
        assert_eq!(c.quiet_lane_cpu_percent, 75, "the default");
        for (text, pct) in [
            ("quiet_lane_cpu_percent = 0\n", 0),
            ("quiet_lane_cpu_percent = 100\n", 100),
        ] {
            let c = Config::from_toml(text, None).expect(text);
            assert_eq!(c.quiet_lane_cpu_percent, pct, "{text}");
        }
    }
}
