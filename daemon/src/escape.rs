//! Untrusted text (namespace labels, registered netids, addresses and owners) made safe to print
//! in logs and `nsauxctl` tables.
//!
//! Why: a name with a newline forges log lines, and one with `ESC [` sequences rewrites the
//! terminal of whoever reads the table. Control characters, backslashes and characters Rust
//! would not print as-is (bidi overrides, zero-width marks) are shown in Rust's escaped form
//! (`\n`, `\u{1b}`), so the output is one line per record and shows exactly what was stored.

use std::borrow::Cow;

/// `s` with every unsafe character escaped; borrowed when nothing needed escaping.
pub(crate) fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\' || (!matches!(c, '"' | '\'') && c.escape_debug().len() > 1)
}

/// The daemon's log field formatter: like tracing-subscriber's default (`message` bare, others
/// `name=value`), but every value goes through [`escape`], so no field (however it was
/// recorded, `%`, `?` or plain) can break a log line or carry a terminal escape, and a value
/// with a space (or an empty one) is quoted (see [`quote_value`]), so `key=value` pairs split
/// on spaces stay pairs.
pub(crate) fn log_fields()
-> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            write!(w, "{}", escape(&text))
        } else {
            write!(w, "{field}={}", quote_value(&escape(&text)))
        }
    })
    .delimited(" ")
}

/// An escaped field value, in double quotes (inner `"` as `\"`) when it holds a space or is
/// empty; values already recorded quoted (`?` of a string) are left as they are.
pub(crate) fn quote_value(v: &str) -> Cow<'_, str> {
    let already = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
    if already || !(v.is_empty() || v.contains(' ')) {
        return Cow::Borrowed(v);
    }
    Cow::Owned(format!("\"{}\"", v.replace('"', "\\\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_spaces_are_quoted() {
        assert_eq!(quote_value("ns-a"), "ns-a");
        assert_eq!(quote_value("a b"), "\"a b\"");
        assert_eq!(quote_value(""), "\"\"");
        assert_eq!(quote_value("say \"hi\" now"), "\"say \\\"hi\\\" now\"");
        assert_eq!(quote_value("\"a b\""), "\"a b\"");
    }

    #[test]
    fn plain_names_are_untouched_and_borrowed() {
        for s in [
            "ns-a",
            "host",
            "tcp6",
            "0.0.0.0.4.1",
            "superuser",
            "ünïcödé",
            "a b",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(x) if x == s), "{s}");
        }
    }

    #[test]
    fn controls_escapes_and_backslashes_are_escaped() {
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("x\ry\tz\0"), "x\\ry\\tz\\0");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("quote\"'"), "quote\"'");
    }
}
