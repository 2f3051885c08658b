//! The shim's command line, parsed the way Go's `flag` package does: `-flag value`, `-flag=value`,
//! `--flag`, boolean flags without a value, then the action. Unknown flags are skipped (newer
//! containerd versions add some).

use std::path::PathBuf;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC socket.
    pub address: String,
    pub publish_binary: String,
    pub bundle: Option<PathBuf>,
    pub debug: bool,
    pub version: bool,
    pub info: bool,
    /// The socket the daemon serves on and the protocol it speaks (internal: passed from `start` to
    /// the daemon).
    pub socket: Option<PathBuf>,
    pub protocol: Option<String>,
    pub idle_exit_seconds: Option<u64>,
    pub keepalive: bool,
    /// The cgroup driver and the CRIU binary (internal: from `start`'s configuration to the daemon).
    pub cgroup_driver: Option<String>,
    pub criu_path: Option<PathBuf>,
    /// `start`, `delete`, or the internal `serve`.
    pub action: Option<String>,
}

const ACTIONS: &[&str] = &["start", "delete", "serve"];
const BOOLEANS: &[&str] = &["debug", "v", "version", "info", "keepalive"];
const WITH_VALUES: &[&str] = &["namespace", "id", "address", "publish-binary", "bundle", "socket", "protocol", "idle-exit", "cgroup-driver", "criu-path"];

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        if arg == "--" {
            flags.action = args.next();
            break;
        }
        let Some(stripped) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')).filter(|s| !s.is_empty()) else {
            flags.action = Some(arg);
            break;
        };
        let (name, inline) = match stripped.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (stripped.to_owned(), None),
        };
        if BOOLEANS.contains(&name.as_str()) {
            let value = match inline.as_deref() {
                None | Some("true") | Some("1") | Some("t") | Some("T") | Some("TRUE") | Some("True") => true,
                Some("false") | Some("0") | Some("f") | Some("F") | Some("FALSE") | Some("False") => false,
                Some(other) => return Err(format!("invalid boolean value {other:?} for flag -{name}")),
            };
            match name.as_str() {
                "debug" => flags.debug = value,
                "v" | "version" => flags.version = value,
                "keepalive" => flags.keepalive = value,
                _ => flags.info = value,
            }
            continue;
        }
        let value = match inline {
            Some(v) => Some(v),
            // An unknown flag followed by an action or another flag is taken to be boolean.
            None if !WITH_VALUES.contains(&name.as_str()) && args.peek().is_some_and(|n| n.starts_with('-') || ACTIONS.contains(&n.as_str())) => None,
            None => Some(args.next().ok_or_else(|| format!("flag needs an argument: -{name}"))?),
        };
        let Some(value) = value else { continue };
        match name.as_str() {
            "namespace" => flags.namespace = value,
            "id" => flags.id = value,
            "address" => flags.address = value,
            "publish-binary" => flags.publish_binary = value,
            "bundle" => flags.bundle = Some(value.into()),
            "socket" => flags.socket = Some(value.into()),
            "protocol" => flags.protocol = Some(value),
            "cgroup-driver" => flags.cgroup_driver = Some(value),
            "criu-path" => flags.criu_path = Some(value.into()),
            "idle-exit" => flags.idle_exit_seconds = Some(value.parse().map_err(|_| format!("invalid value {value:?} for flag -idle-exit"))?),
            _ => {}
        }
    }
    Ok(flags)
}

/// What `start` decided for the daemon (from the configuration and containerd's version).
pub struct DaemonSettings<'a> {
    pub protocol: &'a str,
    pub idle_exit_seconds: u64,
    pub keepalive: bool,
    pub cgroup_driver: &'a str,
    pub criu_path: Option<&'a std::path::Path>,
}

/// The daemon's arguments: the same identity, its socket, the settings, and the internal action.
pub fn for_daemon(flags: &Flags, socket: &std::path::Path, settings: &DaemonSettings<'_>) -> Vec<String> {
    let DaemonSettings { protocol, idle_exit_seconds, keepalive, cgroup_driver, criu_path } = *settings;
    let mut args = vec![
        "-namespace".into(),
        flags.namespace.clone(),
        "-id".into(),
        flags.id.clone(),
        "-address".into(),
        flags.address.clone(),
        "-publish-binary".into(),
        flags.publish_binary.clone(),
        "-socket".into(),
        socket.display().to_string(),
        "-protocol".into(),
        protocol.to_owned(),
        "-idle-exit".into(),
        idle_exit_seconds.to_string(),
        "-cgroup-driver".into(),
        cgroup_driver.to_owned(),
    ];
    if let Some(path) = criu_path {
        args.extend(["-criu-path".into(), path.display().to_string()]);
    }
    if flags.debug {
        args.push("-debug".into());
    }
    if keepalive {
        args.push("-keepalive".into());
    }
    args.push("serve".into());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Flags {
        parse(s.split_whitespace().map(String::from)).unwrap()
    }

    #[test]
    fn containerd_start_line() {
        let f = parse_str("-namespace default -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id c1 -debug start");
        assert_eq!(f.namespace, "default");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert_eq!(f.publish_binary, "/usr/bin/containerd");
        assert_eq!(f.id, "c1");
        assert!(f.debug);
        assert_eq!(f.action.as_deref(), Some("start"));
    }

    #[test]
    fn equals_form_double_dash_and_unknown_flags() {
        let f = parse_str("--namespace=k8s.io -id=x -new-flag -other-flag value -bundle /b delete");
        assert_eq!(f.namespace, "k8s.io");
        assert_eq!(f.id, "x");
        assert_eq!(f.bundle, Some(PathBuf::from("/b")));
        assert_eq!(f.action.as_deref(), Some("delete"));
        let f = parse_str("-debug=false -unknown start");
        assert!(!f.debug);
        assert_eq!(f.action.as_deref(), Some("start"));
    }

    #[test]
    fn command_like_flags() {
        assert!(parse_str("-info").info);
        assert!(parse_str("-v").version);
        assert!(parse(["-id".to_string()]).is_err());
        assert!(parse(["-debug=maybe".to_string()]).is_err());
    }

    #[test]
    fn daemon_arguments_round_trip() {
        let f = parse_str("-namespace n -address /a -publish-binary /p -id i -debug start");
        let settings = DaemonSettings { protocol: "grpc", idle_exit_seconds: 7, keepalive: true, cgroup_driver: "systemd", criu_path: Some(std::path::Path::new("/opt/criu")) };
        let daemon = parse(for_daemon(&f, std::path::Path::new("/run/containerd/s/x"), &settings)).unwrap();
        assert_eq!(daemon.cgroup_driver.as_deref(), Some("systemd"));
        assert_eq!(daemon.criu_path, Some(PathBuf::from("/opt/criu")));
        assert_eq!(daemon.namespace, "n");
        assert_eq!(daemon.socket, Some(PathBuf::from("/run/containerd/s/x")));
        assert_eq!(daemon.action.as_deref(), Some("serve"));
        assert_eq!(daemon.protocol.as_deref(), Some("grpc"));
        assert_eq!(daemon.idle_exit_seconds, Some(7));
        assert!(daemon.keepalive);
        assert!(daemon.debug);
    }
}
