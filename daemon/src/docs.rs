//! Man pages and shell completions, generated so they never drift from the program:
//! `nsauxd(8)` and `nsauxctl(8)` from the clap definitions, `nsaux.toml(5)` from the
//! documented example configuration `packaging/nsaux.toml` (every key with its default and
//! its comment: the one place the keys are documented). The generated files are checked in
//! under `packaging/` (the Debian package installs them); the test here fails when they are
//! stale and rewrites them when run with `NSAUX_REGEN=1`:
//! `NSAUX_REGEN=1 cargo test -p nsauxd docs::`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::ctl::CtlArgs;
use crate::startup::DaemonArgs;

/// The documented example configuration, source of `nsaux.toml(5)`.
const EXAMPLE_CONFIG: &str = include_str!("../../packaging/nsaux.toml");

/// Escapes text for roff: backslashes, and a leading `.` or `'` that would read as a request.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// A clap-generated page (title, name, synopsis, description, options, subcommands,
/// version) in `section`, followed by `extra` roff.
fn clap_page(cmd: clap::Command, section: &str, extra: &str) -> String {
    let mut out = Vec::new();
    // The page shows the bare version: the commit in `--version` would change it every commit.
    let man = clap_mangen::Man::new(cmd.long_version(None::<&'static str>))
        .section(section)
        .manual("nsaux")
        .source(format!("nsaux {}", env!("CARGO_PKG_VERSION")));
    // Writing to a Vec cannot fail.
    let _ = man.render(&mut out);
    let mut page = String::from_utf8_lossy(&out).into_owned();
    page.push_str(extra);
    page
}

/// Every leaf subcommand's full help, as `.SS` blocks: the clap page lists the verbs only.
fn subcommand_details(cmd: &clap::Command, path: &str, out: &mut String) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("{path} {}", sub.get_name());
        if sub.has_subcommands() {
            subcommand_details(sub, &name, out);
            continue;
        }
        let mut sub = sub.clone().bin_name(name.clone()).disable_help_flag(true);
        let help = sub.render_long_help().to_string();
        let _ = writeln!(out, ".SS \"{}\"\n.nf", roff(&name));
        for line in help.lines() {
            let _ = writeln!(out, "{}", roff(line));
        }
        let _ = writeln!(out, ".fi");
    }
}

/// `nsauxd(8)`.
fn nsauxd_page() -> String {
    let extra = "\
.SH FILES
.TP
\\fI/etc/nsaux/nsaux.toml\\fR
Configuration, see \\fBnsaux.toml\\fR(5). When absent, built\\-in defaults apply.
.TP
\\fI/run/nsaux/\\fR
Lock file and control socket (mode 0600), used by \\fBnsauxctl\\fR(8).
.TP
\\fI/var/lib/nsaux/\\fR
Durable portmapper registrations, per boot and namespace.
.TP
\\fI/run/rpcbind.sock\\fR
The portmapper's path socket; each caller is served by its own network namespace.
.SH SIGNALS
SIGHUP reloads the configuration (so does \\fBnsauxctl reload\\fR, which reports errors).
SIGTERM and SIGINT stop the daemon.
.SH CAPABILITIES
After start nsauxd keeps only CAP_SYS_ADMIN (setns into each namespace),
CAP_NET_BIND_SERVICE (ports 53, 111, 123), CAP_NET_ADMIN (SIOCGSKNS: a namespace's
fd from one of its sockets) and CAP_SYS_PTRACE (reading
/proc/PID/ns/net of other users' processes); CAP_SYS_RESOURCE is used once at start
to raise the open\\-file limit. Every other capability is dropped from all sets.
.SH EXIT STATUS
0 after a clean stop; 78 (EX_CONFIG) when the configuration is invalid; 1 on any other
failure to start.
.SH SEE ALSO
\\fBnsauxctl\\fR(8), \\fBnsaux.toml\\fR(5), \\fBrpcinfo\\fR(8), \\fBip\\-netns\\fR(8)
";
    clap_page(DaemonArgs::command(), "8", extra)
}

/// `nsauxctl(8)`.
fn nsauxctl_page() -> String {
    let cmd = CtlArgs::command();
    let mut extra = String::from(".SH COMMANDS\n");
    subcommand_details(&cmd, "nsauxctl", &mut extra);
    extra.push_str(
        "\
.SH EXIT STATUS
.TP
0
Success.
.TP
1
The daemon cannot be reached or refused the request, the configuration given to
\\fBvalidate\\fR is invalid, or nothing matched: an unknown namespace, a service that does
not run there, a registration or record that is not there.
.TP
2
Usage error.
.TP
141
The output pipe was closed (SIGPIPE), e.g. \\fBnsauxctl rpc list | head \\-1\\fR.
.SH SEE ALSO
\\fBnsauxd\\fR(8), \\fBnsaux.toml\\fR(5)
",
    );
    clap_page(cmd, "8", &extra)
}

/// Splits `key = value   # comment` at the first `#` outside quotes.
fn split_comment(line: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return (line[..i].trim_end(), line[i + 1..].trim()),
            _ => {}
        }
    }
    (line.trim_end(), "")
}

/// `key = value` (the line without its comment), if it is one.
fn key_value(text: &str) -> Option<(&str, &str)> {
    let (k, v) = text.split_once(" = ")?;
    let k = k.trim();
    k.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        .then_some((k, v.trim()))
}

/// `nsaux.toml(5)` from the example configuration: comment paragraphs become descriptions,
/// `[section]` lines subsections, `key = default  # doc` entries, commented-out keys optional
/// entries, and the commented `[[netns]]` block an example.
fn config_page() -> String {
    let mut body = String::new();
    let mut para: Vec<String> = Vec::new();
    let mut intro_done = false;
    let mut example: Option<Vec<String>> = None;
    let flush = |para: &mut Vec<String>, body: &mut String| {
        if !para.is_empty() {
            let _ = writeln!(body, ".PP\n{}", roff(&para.join(" ")));
            para.clear();
        }
    };
    for line in EXAMPLE_CONFIG.lines() {
        let trimmed = line.trim();
        if let Some(ex) = example.as_mut() {
            ex.push(
                trimmed
                    .trim_start_matches('#')
                    .trim_start_matches(' ')
                    .to_owned(),
            );
            continue;
        }
        if trimmed.is_empty() {
            if !intro_done {
                intro_done = true;
                let _ = writeln!(body, ".SH DESCRIPTION");
                flush(&mut para, &mut body);
                let _ = writeln!(body, ".SH KEYS\n.SS \"Daemon\\-wide keys\"");
            }
            continue;
        }
        if let Some(c) = trimmed.strip_prefix('#') {
            let c = c.trim();
            if c == "[[netns]]" {
                let _ = writeln!(body, ".SS \"[[netns]]\"");
                flush(&mut para, &mut body);
                example = Some(vec![c.to_owned()]);
                continue;
            }
            let (text, doc) = split_comment(c);
            if let Some((k, v)) = key_value(text) {
                flush(&mut para, &mut body);
                let _ = writeln!(
                    body,
                    ".TP\n\\fB{}\\fR (unset by default; e.g. {})\n{}",
                    roff(k),
                    roff(v),
                    roff(doc)
                );
            } else if line.starts_with(' ') {
                // A continuation of the entry above (an indented comment line).
                let _ = writeln!(body, "{}", roff(c));
            } else {
                para.push(c.to_owned());
            }
            continue;
        }
        let (text, doc) = split_comment(trimmed);
        if text.starts_with('[') {
            let _ = writeln!(body, ".SS \"{}\"", roff(text));
            if !doc.is_empty() {
                para.push(doc.to_owned());
            }
            flush(&mut para, &mut body);
        } else if let Some((k, v)) = key_value(text) {
            let mut doc_text = para.join(" ");
            para.clear();
            if !doc.is_empty() {
                if !doc_text.is_empty() {
                    doc_text.push(' ');
                }
                doc_text.push_str(doc);
            }
            let _ = writeln!(
                body,
                ".TP\n\\fB{}\\fR = {}\n{}",
                roff(k),
                roff(v),
                roff(&doc_text)
            );
        }
    }
    if let Some(ex) = example {
        let _ = writeln!(body, ".PP\n.nf\n.RS");
        for l in ex {
            let _ = writeln!(body, "{}", roff(&l));
        }
        let _ = writeln!(body, ".RE\n.fi");
    }
    format!(
        ".TH NSAUX.TOML 5 \"\" \"nsaux {}\" \"nsaux\"\n.SH NAME\nnsaux.toml \\- configuration of \
         nsauxd(8)\n.SH SYNOPSIS\n\\fI/etc/nsaux/nsaux.toml\\fR\n{body}.SH ERRORS\n\
         \\fBnsauxctl validate\\fR checks a file offline; a reload or start refuses a file with an \
         unknown key (naming the valid keys of its table), a value of the wrong type (quoted), \
         or a value the daemon cannot run with (such as a port of 0).\n.SH SEE ALSO\n\
         \\fBnsauxd\\fR(8), \\fBnsauxctl\\fR(8)\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Completion scripts of one binary for bash, zsh and fish, with their file names.
fn completions(mut cmd: clap::Command, bin: &str) -> Vec<(PathBuf, String)> {
    [
        (Shell::Bash, format!("bash/{bin}")),
        (Shell::Zsh, format!("zsh/_{bin}")),
        (Shell::Fish, format!("fish/{bin}.fish")),
    ]
    .into_iter()
    .map(|(shell, file)| {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, bin, &mut out);
        (
            PathBuf::from("completions").join(file),
            String::from_utf8_lossy(&out).into_owned(),
        )
    })
    .collect()
}

/// Every generated file, relative to `packaging/`.
fn generated() -> Vec<(PathBuf, String)> {
    let mut v = vec![
        (PathBuf::from("man/nsauxd.8"), nsauxd_page()),
        (PathBuf::from("man/nsauxctl.8"), nsauxctl_page()),
        (PathBuf::from("man/nsaux.toml.5"), config_page()),
    ];
    v.extend(completions(DaemonArgs::command(), "nsauxd"));
    v.extend(completions(CtlArgs::command(), "nsauxctl"));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn packaging() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
    }

    #[test]
    fn checked_in_man_pages_and_completions_are_current() {
        let regen = std::env::var_os("NSAUX_REGEN").is_some_and(|v| v == "1");
        let mut stale = Vec::new();
        for (rel, text) in generated() {
            let path = packaging().join(&rel);
            if regen {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).expect("create packaging dir");
                }
                std::fs::write(&path, &text).expect("write generated file");
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(rel.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "stale generated files under packaging/: {stale:?}; \
             regenerate with `NSAUX_REGEN=1 cargo test -p nsauxd docs::`"
        );
    }

    #[test]
    fn every_key_the_daemon_accepts_is_documented() {
        // The valid keys of each table, as the daemon's own error for an unknown key lists
        // them, must each appear in the example configuration that nsaux.toml(5) is made of.
        for table in [
            "[ident]",
            "[rpcbind]",
            "[ntp]",
            "[ntp.rate_limit]",
            "[dns]",
            "[limits]",
            "[dns]\nrate_limit = { nsaux_no_such_key = 1 }\n#",
        ] {
            let text = format!("{table}\nnsaux_no_such_key = 1\n");
            let e = Config::from_toml(&text, None).expect_err(table).to_string();
            let keys = e
                .split_once("valid keys: ")
                .unwrap_or_else(|| panic!("{table}: {e}"))
                .1;
            for key in keys.split(", ") {
                let key = key.trim();
                assert!(
                    EXAMPLE_CONFIG.contains(&format!("{key} =")),
                    "{table}: key {key} not documented in packaging/nsaux.toml"
                );
            }
        }
        for key in [
            "host_netns",
            "netns_dirs",
            "worker_threads",
            "receive_coalesce_us",
            "quiet_lane_cpu_percent",
        ] {
            assert!(EXAMPLE_CONFIG.contains(&format!("{key} =")), "{key}");
        }
    }

    #[test]
    fn the_config_page_has_every_section_and_the_version_names_the_binary() {
        let page = config_page();
        for s in [
            "[ident]",
            "[rpcbind]",
            "[ntp]",
            "[ntp.rate_limit]",
            "[dns]",
            "[limits]",
            "[[netns]]",
        ] {
            assert!(page.contains(&format!(".SS \"{s}\"")), "{s}");
        }
        assert_eq!(CtlArgs::command().get_name(), "nsauxctl");
        assert_eq!(DaemonArgs::command().get_name(), "nsauxd");
    }
}
