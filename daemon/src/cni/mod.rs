//! `nsaux-cni`: a CNI plugin (spec 1.0) that serves a pod's namespace. Chained after the plugins
//! that make its interfaces, ADD attaches `CNI_NETNS` by path under `K8S_POD_NAMESPACE.K8S_POD_NAME`
//! from `CNI_ARGS` (else the shortened container id), keyed `cni:NETWORK:CONTAINERID:IFNAME`, and
//! prints `prevResult` unchanged; DEL detaches the key (success when already gone, or when the
//! daemon is down: nothing is attached then); CHECK fails unless the key is attached; VERSION
//! lists the versions understood. Plugin config keys: `runtimeDir` (default `/run/nsaux`) and
//! `nsauxConfig` (default `/etc/nsaux/nsaux.toml`, for `[hooks] on_daemon_down`).

mod error;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::{Value, json};

use self::error::CniError;
use crate::config::OnDaemonDown;
use crate::defaults::{DEFAULT_CONFIG, DEFAULT_RUNTIME_DIR};
use crate::hooks::{self, HookError};

/// The versions whose ADD/DEL/CHECK this plugin implements.
const SUPPORTED: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The network configuration on stdin: what the plugin reads of it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default)]
    runtime_dir: Option<PathBuf>,
    #[serde(default)]
    nsaux_config: Option<PathBuf>,
}

/// `nsaux-cni`'s main: errors go to stdout in the CNI error format, with a non-zero exit.
pub fn cni_main() -> ExitCode {
    let input = match hooks::read_stdin() {
        Ok(i) => i,
        Err(e) => return fail("1.0.0", &CniError::new(error::DECODE, format!("{e:#}"))),
    };
    let version = serde_json::from_slice::<Value>(&input)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "1.0.0".into());
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    match run(&env("CNI_COMMAND"), &input, &env) {
        Ok(Some(out)) => {
            let mut stdout = std::io::stdout();
            let _ = writeln!(stdout, "{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => fail(&version, &e),
    }
}

fn fail(version: &str, e: &CniError) -> ExitCode {
    println!("{}", e.to_json(version));
    ExitCode::FAILURE
}

/// One invocation: `Ok(Some(json))` is printed on stdout.
fn run(
    command: &str,
    input: &[u8],
    env: &dyn Fn(&str) -> String,
) -> Result<Option<Value>, CniError> {
    if command == "VERSION" {
        return Ok(Some(
            json!({ "cniVersion": "1.0.0", "supportedVersions": SUPPORTED }),
        ));
    }
    let conf: NetConf = serde_json::from_slice(input).map_err(|e| {
        CniError::new(error::DECODE, "cannot decode the network configuration")
            .details(e.to_string())
    })?;
    if !SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            error::INCOMPATIBLE_VERSION,
            format!("unsupported cniVersion {:?}", conf.cni_version),
        ));
    }
    let runtime_dir = conf
        .runtime_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR));
    let container = env("CNI_CONTAINERID");
    let key = format!("cni:{}:{container}:{}", conf.name, env("CNI_IFNAME"));
    match command {
        "ADD" => {
            let netns = required(env, "CNI_NETNS")?;
            if container.is_empty() {
                return Err(CniError::new(
                    error::INVALID_ENV,
                    "CNI_CONTAINERID is not set",
                ));
            }
            let name = pod_name(&env("CNI_ARGS")).unwrap_or_else(|| hooks::short_name(&container));
            let req = hooks::attach_request(name, None, Some(PathBuf::from(netns)), key, "cni");
            match hooks::call(&runtime_dir, &req) {
                Ok(_) => {}
                Err(HookError::DaemonDown(sock)) => daemon_down(&conf, sock)?,
                Err(HookError::Refused(r)) => {
                    return Err(
                        CniError::new(error::REFUSED, "nsauxd refused to attach").details(r)
                    );
                }
            }
            let mut result = conf.prev_result.unwrap_or_else(|| json!({}));
            if let Value::Object(m) = &mut result {
                m.entry("cniVersion")
                    .or_insert_with(|| json!(conf.cni_version));
            }
            Ok(Some(result))
        }
        "DEL" => match hooks::call(&runtime_dir, &hooks::detach_request(key)) {
            Ok(_) | Err(HookError::DaemonDown(_)) => Ok(None),
            Err(HookError::Refused(r)) => {
                Err(CniError::new(error::REFUSED, "nsauxd refused to detach").details(r))
            }
        },
        "CHECK" => check(&runtime_dir, &key).map(|()| None),
        "GC" | "STATUS" => Ok(None),
        "" => Err(CniError::new(error::INVALID_ENV, "CNI_COMMAND is not set")),
        other => Err(CniError::new(
            error::INVALID_ENV,
            format!("unknown CNI_COMMAND {other:?}"),
        )),
    }
}

fn required(env: &dyn Fn(&str) -> String, key: &str) -> Result<String, CniError> {
    let v = env(key);
    if v.is_empty() {
        return Err(CniError::new(
            error::INVALID_ENV,
            format!("{key} is not set"),
        ));
    }
    Ok(v)
}

/// The daemon is down at ADD: the `[hooks]` policy says whether the pod fails (retryable).
fn daemon_down(conf: &NetConf, sock: PathBuf) -> Result<(), CniError> {
    let config = conf
        .nsaux_config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let policy = hooks::policy(&config).map_err(|e| {
        CniError::new(error::INVALID_CONFIG, "cannot read nsaux's configuration")
            .details(format!("{e:#}"))
    })?;
    let down = HookError::DaemonDown(sock).to_string();
    match policy {
        OnDaemonDown::Fail => Err(CniError::new(error::TRY_AGAIN, down)),
        OnDaemonDown::Warn => {
            eprintln!("nsaux-cni: warning: {down}; the pod starts without nsaux");
            Ok(())
        }
    }
}

/// CHECK: the key must be attached to a namespace the daemon serves.
fn check(runtime_dir: &Path, key: &str) -> Result<(), CniError> {
    let list = match hooks::call(runtime_dir, &crate::control::Request::NsList) {
        Ok(v) => v,
        Err(HookError::DaemonDown(sock)) => {
            return Err(CniError::new(
                error::TRY_AGAIN,
                HookError::DaemonDown(sock).to_string(),
            ));
        }
        Err(HookError::Refused(r)) => return Err(CniError::new(error::REFUSED, r)),
    };
    let found = list.as_array().into_iter().flatten().any(|ns| {
        ns["attached"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["key"].as_str() == Some(key))
    });
    if found {
        Ok(())
    } else {
        Err(CniError::new(
            error::NOT_SERVED,
            format!("{key} is not attached to nsauxd"),
        ))
    }
}

/// `K8S_POD_NAMESPACE.K8S_POD_NAME` from `CNI_ARGS` (`K=V;K=V`), when both are there.
fn pod_name(args: &str) -> Option<String> {
    let get = |k: &str| {
        args.split(';')
            .filter_map(|kv| kv.split_once('='))
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.replace('/', "_"))
            .filter(|v| !v.is_empty())
    };
    Some(format!(
        "{}.{}",
        get("K8S_POD_NAMESPACE")?,
        get("K8S_POD_NAME")?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_come_from_cni_args() {
        assert_eq!(
            pod_name("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0").as_deref(),
            Some("default.web-0")
        );
        assert_eq!(pod_name("K8S_POD_NAME=web-0"), None);
        assert_eq!(pod_name(""), None);
    }

    #[test]
    fn version_and_bad_input_answer_in_the_spec_format() {
        let env = |_: &str| String::new();
        let v = run("VERSION", b"{}", &env).ok().flatten();
        assert_eq!(v.map(|v| v["cniVersion"].clone()), Some(json!("1.0.0")));
        let e = run("ADD", b"{half", &env).err().map(|e| e.code);
        assert_eq!(e, Some(error::DECODE));
        let e = run("ADD", br#"{"cniVersion":"9.9.9"}"#, &env)
            .err()
            .map(|e| e.code);
        assert_eq!(e, Some(error::INCOMPATIBLE_VERSION));
        let e = run("ADD", br#"{"cniVersion":"1.0.0","name":"n"}"#, &env).err();
        assert_eq!(
            e.map(|e| e.to_json("1.0.0")["code"].clone()),
            Some(json!(error::INVALID_ENV))
        );
    }
}
