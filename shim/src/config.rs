//! The shim's configuration: a TOML file, `/etc/myshim/config.toml` unless `MYSHIM_CONFIG` names
//! another, or the same keys handed over by containerd in the runtime options (`runtimeoptions.v1`
//! `ConfigBody`, the CRI runtime's `options` table, or `ConfigPath`). A missing file means defaults;
//! a malformed one is an error `start` reports.
//!
//! ```toml
//! protocol = "grpc"        # or "ttrpc" (default); gRPC only where containerd can hold it
//! idle_exit_seconds = 30   # a daemon left without containers this long exits
//! grpc_keepalive = true    # over gRPC, keep a Wait in flight per running container (see keepalive.rs)
//! cgroup_driver = "systemd"  # or "cgroupfs" (default); runc's `SystemdCgroup = true` means the same
//! shim_cgroup = "/shims"   # an existing cgroup for the shim daemons (runc's `ShimCgroup`)
//! criu_path = "/usr/local/sbin/criu"  # the CRIU for checkpoint/restore (default: `criu` on PATH)
//! ```
//!
//! runc's own options (`containerd.runc.v1.Options`, as Docker and containerd's clients send them for
//! runc) are understood too: `SystemdCgroup` selects the systemd driver.

use std::path::{Path, PathBuf};

use myshim_protos::containerd::runc::v1::Options as RuncOptions;
use myshim_protos::runtimeoptions::v1::Options as RuntimeOptions;
use myshim_runtime::cgroups::Driver;
use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/myshim/config.toml";
pub const PATH_VARIABLE: &str = "MYSHIM_CONFIG";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Ttrpc,
    Grpc,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ttrpc => "ttrpc",
            Protocol::Grpc => "grpc",
        }
    }

    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "ttrpc" => Some(Protocol::Ttrpc),
            "grpc" => Some(Protocol::Grpc),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Config {
    pub protocol: Protocol,
    pub idle_exit_seconds: u64,
    pub grpc_keepalive: bool,
    pub cgroup_driver: Option<Driver>,
    /// runc's name for the same choice (what a CRI handler's options table for runc says).
    #[serde(rename = "SystemdCgroup")]
    pub systemd_cgroup: bool,
    /// An existing cgroup the shim daemon runs in (runc's `ShimCgroup`), rather than containerd's.
    #[serde(alias = "ShimCgroup")]
    pub shim_cgroup: Option<String>,
    /// The CRIU binary for checkpoint and restore; `criu` on the daemon's PATH when unset.
    pub criu_path: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config { protocol: Protocol::Ttrpc, idle_exit_seconds: 30, grpc_keepalive: true, cgroup_driver: None, systemd_cgroup: false, shim_cgroup: None, criu_path: None }
    }
}

impl Config {
    /// The cgroup driver: `cgroup_driver` when given, else systemd when `SystemdCgroup` is set.
    pub fn driver(&self) -> Driver {
        self.cgroup_driver.unwrap_or(if self.systemd_cgroup { Driver::Systemd } else { Driver::Cgroupfs })
    }
}

/// Where the configuration came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Defaults,
    File(PathBuf),
    RuntimeOptions,
}

pub fn parse(text: &str, origin: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| format!("configuration {origin}: {}", e.to_string().trim()))
}

fn from_file(path: &Path) -> Result<Option<Config>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &path.display().to_string()).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("configuration {}: {e}", path.display())),
    }
}

/// Loads the configuration: runtime options first, then the file. runc's options choose the cgroup
/// driver on top of the file.
pub fn load(options: Option<&prost_types::Any>) -> Result<(Config, Source), String> {
    if let Some(runc) = options.filter(|o| myshim_protos::any_is::<RuncOptions>(o)) {
        let runc: RuncOptions = myshim_protos::from_any(runc).map_err(|e| format!("runc options: {e}"))?;
        let (mut config, source) = load(None)?;
        if runc.systemd_cgroup {
            config.cgroup_driver = Some(Driver::Systemd);
        }
        if !runc.shim_cgroup.is_empty() {
            config.shim_cgroup = Some(runc.shim_cgroup);
        }
        return Ok((config, source));
    }
    if let Some(options) = options.filter(|o| myshim_protos::any_is::<RuntimeOptions>(o)) {
        let options: RuntimeOptions = myshim_protos::from_any(options).map_err(|e| format!("runtime options: {e}"))?;
        if !options.config_body.trim().is_empty() {
            return Ok((parse(&options.config_body, "from the runtime options")?, Source::RuntimeOptions));
        }
        if !options.config_path.is_empty() {
            let path = PathBuf::from(&options.config_path);
            return match from_file(&path)? {
                Some(config) => Ok((config, Source::File(path))),
                None => Err(format!("configuration {}: no such file (named by the runtime options)", path.display())),
            };
        }
    }
    let path = std::env::var_os(PATH_VARIABLE).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    Ok(match from_file(&path)? {
        Some(config) => (config, Source::File(path)),
        None => (Config::default(), Source::Defaults),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_defaults() {
        assert_eq!(parse("", "t").unwrap(), Config::default());
        let c = parse("protocol = \"grpc\"\nidle_exit_seconds = 5\nSystemdCgroup = true\n", "t").unwrap();
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.idle_exit_seconds, 5);
        assert_eq!(c.driver(), Driver::Systemd);
        assert_eq!(parse("cgroup_driver = \"cgroupfs\"\nSystemdCgroup = true", "t").unwrap().driver(), Driver::Cgroupfs);
        assert_eq!(parse("", "t").unwrap().driver(), Driver::Cgroupfs);
        assert!(parse("cgroup_driver = \"upstart\"", "/etc/x.toml").unwrap_err().contains("upstart"));
        let err = parse("protocol = \"carrier-pigeon\"", "/etc/x.toml").unwrap_err();
        assert!(err.contains("/etc/x.toml") && err.contains("carrier-pigeon"), "{err}");
        assert!(parse("protocol = ", "t").is_err());
    }

    #[test]
    fn runc_options_choose_the_driver() {
        let runc = RuncOptions { systemd_cgroup: true, shim_cgroup: "/shims".into(), ..Default::default() };
        let config = load(Some(&myshim_protos::to_any(&runc))).unwrap().0;
        assert_eq!(config.driver(), Driver::Systemd);
        assert_eq!(config.shim_cgroup.as_deref(), Some("/shims"));
    }

    #[test]
    fn runtime_options_carry_the_config() {
        let body = RuntimeOptions { type_url: String::new(), config_path: String::new(), config_body: "protocol = \"grpc\"".into() };
        let (config, source) = load(Some(&myshim_protos::to_any(&body))).unwrap();
        assert_eq!(config.protocol, Protocol::Grpc);
        assert_eq!(source, Source::RuntimeOptions);
        let missing = RuntimeOptions { type_url: String::new(), config_path: "/nonexistent/myshim.toml".into(), config_body: String::new() };
        assert!(load(Some(&myshim_protos::to_any(&missing))).unwrap_err().contains("/nonexistent/myshim.toml"));
    }
}
