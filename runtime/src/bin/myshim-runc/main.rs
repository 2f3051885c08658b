//! `myshim-runc`: runc's command line over the myshim runtime library, so that tools which drive runc
//! (containerd's `io.containerd.runc.v2` shim, OCI conformance suites) can drive this runtime.
//!
//! Global flags: `--root`, `--log`, `--log-format text|json`, `--debug`, `--systemd-cgroup` (the
//! systemd cgroup driver; a `slice:prefix:name` cgroups path selects it anyway), `--criu PATH`,
//! `--version`, `--help`. Verbs: see [`VERBS`].

mod events;
mod list;
mod update;

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use myshim_runtime::checkpoint::{CgroupsMode, CheckpointOptions, Criu, CriuOptions};
use myshim_runtime::{cgroups, spec, state, sys, Container, CreateOptions, Runtime, Stdio};

const DEFAULT_ROOT: &str = "/run/myshim-runc";

/// runc's verbs, each with what it does (for `--help`).
const VERBS: &[(&str, &str)] = &[
    ("create", "create a container from a bundle"),
    ("start", "run the created container's program"),
    ("run", "create and start a container"),
    ("state", "print a container's OCI state"),
    ("list", "list the containers (--format table|json, --quiet)"),
    ("kill", "send a signal to a container's init (--all: to every process)"),
    ("delete", "delete a stopped container (--force: any)"),
    ("exec", "run a process in a container"),
    ("ps", "list a container's processes"),
    ("events", "print a container's stats and OOM kills (--stats, --interval)"),
    ("pause", "freeze a container"),
    ("resume", "thaw a container"),
    ("update", "change a container's resources (--resources FILE or runc's flags)"),
    ("checkpoint", "checkpoint a container with CRIU"),
    ("restore", "restore a container from a CRIU checkpoint"),
    ("spec", "write an example config.json"),
    ("features", "print what this runtime supports"),
];

fn usage() -> String {
    let mut text = String::from("myshim-runc: runc's command line over the myshim runtime\n\nusage: myshim-runc [global flags] <command> [flags] [arguments]\n\ncommands:\n");
    for (verb, what) in VERBS {
        text.push_str(&format!("   {verb:<12}{what}\n"));
    }
    text.push_str("\nglobal flags: --root DIR, --log FILE, --log-format text|json, --systemd-cgroup, --criu PATH, --debug, --version, --help\n");
    text
}

/// `--version`, in runc's form (tools read the first line, and `spec:`).
fn version() -> String {
    let seccomp = libseccomp::ScmpVersion::current().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro)).unwrap_or_else(|_| "unknown".into());
    format!("myshim-runc version {}\nspec: {}\nlibseccomp: {seccomp}", env!("CARGO_PKG_VERSION"), myshim_runtime::features::OCI_VERSION_MAX)
}

fn main() -> ExitCode {
    myshim_runtime::run_helper_if_requested();
    if let Err(reason) = myshim_runtime::process::executable::check_invocation() {
        eprintln!("myshim-runc: error: {reason}");
        return ExitCode::from(1);
    }
    let mut args = Args { items: std::env::args().skip(1).collect() };
    let global = Global::parse(&mut args);
    if global.version {
        println!("{}", version());
        return ExitCode::SUCCESS;
    }
    if global.help || args.items.first().is_some_and(|verb| verb == "help") {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let _ = tracing::subscriber::set_global_default(WarningLog { log: global.log.clone(), json: global.json_log });
    match run(&global, args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            global.log_error(&format!("{e:#}"));
            // "error" as runc's messages have it: tools look for the word.
            eprintln!("myshim-runc: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Flags before the verb.
struct Global {
    root: PathBuf,
    log: Option<PathBuf>,
    json_log: bool,
    systemd_cgroup: bool,
    /// The CRIU binary (`--criu`); `criu` on PATH when unset.
    criu: Option<PathBuf>,
    version: bool,
    help: bool,
}

impl Global {
    /// Takes the global flags off the front of `args` (those before the verb: a verb's own flags, such
    /// as `spec --rootless`, stay with it).
    fn parse(args: &mut Args) -> Global {
        const WITH_VALUES: &[&str] = &["--root", "--log", "--log-format", "--criu", "--rootless"];
        let mut verb = 0;
        while let Some(item) = args.items.get(verb).filter(|a| a.starts_with('-')) {
            verb += if WITH_VALUES.contains(&item.as_str()) { 2 } else { 1 };
        }
        let rest = args.items.split_off(verb.min(args.items.len()));
        let mut front = Args { items: std::mem::replace(&mut args.items, rest) };
        let root = front.flag(&["--root"]).map(PathBuf::from).unwrap_or_else(|| DEFAULT_ROOT.into());
        let log = front.flag(&["--log"]).map(PathBuf::from);
        let json_log = front.flag(&["--log-format"]).as_deref() == Some("json");
        let systemd_cgroup = front.switch(&["--systemd-cgroup"]);
        let criu = front.flag(&["--criu"]).map(PathBuf::from);
        let version = front.switch(&["--version", "-v"]);
        let help = front.switch(&["--help", "-h"]);
        // runc's --rootless (a value: true, false, auto) and --debug change nothing here.
        front.flag(&["--rootless"]);
        Global { root, log, json_log, systemd_cgroup, criu, version, help }
    }

    fn criu(&self) -> Result<Criu> {
        Ok(Criu::locate(self.criu.as_deref())?)
    }

    fn cgroup_driver(&self) -> cgroups::Driver {
        if self.systemd_cgroup {
            cgroups::Driver::Systemd
        } else {
            cgroups::Driver::Cgroupfs
        }
    }

    /// Errors go to `--log` as runc writes them (containerd's runc shim reads the last one from there).
    fn log_error(&self, message: &str) {
        if let Some(path) = &self.log {
            write_log_line(path, self.json_log, "error", message);
        }
    }
}

/// One line of runc's log: JSON (`--log-format json`, what containerd's runc shim reads) or logrus text.
fn write_log_line(path: &Path, json: bool, level: &str, message: &str) {
    let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(path) else { return };
    let line = if json {
        serde_json::json!({ "level": level, "msg": message, "time": rfc3339(std::time::SystemTime::now()) }).to_string()
    } else {
        format!("level={level} msg={message:?}")
    };
    let _ = writeln!(file, "{line}");
}

/// The runtime's warnings (`tracing` events at warn level and above: a capability that could not be
/// raised, say) go where runc's go: into `--log` in its format, else to stderr.
struct WarningLog {
    log: Option<PathBuf>,
    json: bool,
}

/// An event's message and other fields, as one line.
#[derive(Default)]
struct EventText(String);

impl tracing::field::Visit for EventText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let separator = if self.0.is_empty() { "" } else { " " };
        if field.name() == "message" {
            self.0 = format!("{value:?}{separator}{}", self.0);
        } else {
            self.0.push_str(&format!("{separator}{}={value:?}", field.name()));
        }
    }
}

impl tracing::Subscriber for WarningLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = EventText::default();
        event.record(&mut text);
        let level = if *event.metadata().level() == tracing::Level::ERROR { "error" } else { "warning" };
        match &self.log {
            Some(path) => write_log_line(path, self.json, level, &text.0),
            None => eprintln!("myshim-runc: {level}: {}", text.0),
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The remaining arguments: `--flag value`, `--flag=value`, switches and positionals.
struct Args {
    items: Vec<String>,
}

impl Args {
    fn flag(&mut self, names: &[&str]) -> Option<String> {
        let verb_end = self.items.iter().position(|a| a == "--").unwrap_or(self.items.len());
        let i = self.items[..verb_end].iter().position(|a| names.iter().any(|n| a == n || a.starts_with(&format!("{n}="))))?;
        let item = self.items.remove(i);
        match item.split_once('=') {
            Some((_, value)) => Some(value.to_owned()),
            None if i < self.items.len() => Some(self.items.remove(i)),
            None => None,
        }
    }

    fn flags(&mut self, names: &[&str]) -> Vec<String> {
        std::iter::from_fn(|| self.flag(names)).collect()
    }

    fn switch(&mut self, names: &[&str]) -> bool {
        match self.items.iter().position(|a| names.contains(&a.as_str())) {
            Some(i) => {
                self.items.remove(i);
                true
            }
            None => false,
        }
    }

    /// The next positional argument (skipping a `--` separator).
    fn positional(&mut self, what: &str) -> Result<String> {
        if self.items.first().is_some_and(|a| a == "--") {
            self.items.remove(0);
        }
        match self.items.iter().position(|a| !a.starts_with('-') || a == "-") {
            Some(i) => Ok(self.items.remove(i)),
            None => bail!("missing {what}"),
        }
    }

    /// Takes off what follows the first positional argument (for `exec`: the command after the
    /// container id, whose own flags, `sh -c` say, are not ours). `value_flags` take a value.
    fn take_after_positional(&mut self, value_flags: &[&str]) -> Vec<String> {
        let mut i = 0;
        while i < self.items.len() {
            let item = &self.items[i];
            if item == "--" {
                self.items.remove(i);
                break;
            }
            if !item.starts_with('-') || item == "-" {
                break;
            }
            i += if value_flags.contains(&item.as_str()) { 2 } else { 1 };
        }
        if i + 1 >= self.items.len() {
            return Vec::new();
        }
        let rest = self.items.split_off(i + 1);
        rest.into_iter().skip_while(|a| a == "--").collect()
    }
}

fn run(global: &Global, mut args: Args) -> Result<u8> {
    let verbs: Vec<&str> = VERBS.iter().map(|(verb, _)| *verb).collect();
    let verb = args.positional(&format!("a command ({})", verbs.join(", ")))?;
    // `<verb> --help` succeeds, as runc's: Podman asks `checkpoint --help` whether the runtime can
    // checkpoint. (Only among the verb's own flags: exec's command may take -h.)
    let flags_end = args.items.iter().position(|a| !a.starts_with('-') || a == "--").unwrap_or(args.items.len());
    if args.items[..flags_end].iter().any(|a| a == "--help" || a == "-h") {
        match VERBS.iter().find(|(v, _)| *v == verb) {
            Some((verb, what)) => println!("myshim-runc {verb}: {what}\n\nusage: myshim-runc [global flags] {verb} [flags] <container-id>"),
            None => bail!("unknown command {verb:?}"),
        }
        return Ok(0);
    }
    match verb.as_str() {
        "create" => {
            let options = CreateFlags::parse(&mut args)?;
            let id = args.positional("container id")?;
            create(global, &id, &options)?;
            Ok(0)
        }
        "start" => {
            let id = args.positional("container id")?;
            load(global, &id)?.start(&Runtime::default())?;
            Ok(0)
        }
        "run" => {
            let options = CreateFlags::parse(&mut args)?;
            let detach = args.switch(&["--detach", "-d"]);
            let id = args.positional("container id")?;
            if !detach {
                sys::become_child_subreaper()?;
            }
            let mut container = create(global, &id, &options)?;
            if let Err(e) = container.start(&Runtime::default()) {
                let _ = container.destroy(&Runtime::default());
                return Err(e.into());
            }
            if detach {
                return Ok(0);
            }
            let code = sys::wait_for_exit(container.pid()).context("wait for the container")?;
            container.destroy(&Runtime::default())?;
            Ok(code as u8)
        }
        "state" => {
            let id = args.positional("container id")?;
            println!("{}", serde_json::to_string_pretty(&oci_state(&load(global, &id)?))?);
            Ok(0)
        }
        "list" => {
            let format = args.flag(&["--format", "-f"]).unwrap_or_else(|| "table".into());
            let quiet = args.switch(&["--quiet", "-q"]);
            list::print(global, &format, quiet)?;
            Ok(0)
        }
        "events" => {
            let stats_once = args.switch(&["--stats"]);
            let interval = match args.flag(&["--interval"]) {
                Some(text) => events::parse_duration(&text)?,
                None => std::time::Duration::from_secs(5),
            };
            let id = args.positional("container id")?;
            events::run(&load(global, &id)?, stats_once, interval)?;
            Ok(0)
        }
        "kill" => {
            let all = args.switch(&["--all", "-a"]);
            let id = args.positional("container id")?;
            let signal = args.positional("signal").unwrap_or_else(|_| "SIGTERM".into());
            load(global, &id)?.signal(parse_signal(&signal)?, all)?;
            Ok(0)
        }
        "delete" => {
            let force = args.switch(&["--force", "-f"]);
            let id = args.positional("container id")?;
            let dir = state::dir_in_root(&global.root, &id)?;
            if !dir.exists() {
                if force {
                    // containerd's runc shim runs this in its `delete` cleanup, where a SIGCHLD loop of
                    // its own reaps children too: a command that is done before the caller waits for
                    // it loses its exit status to that loop, and the caller reports `exit status 255`
                    // (go-runc's stand-in). runc takes long enough to start that its caller is always
                    // waiting by then; so is ours, once the caller waits.
                    wait_until_the_parent_waits(std::time::Duration::from_millis(100));
                    return Ok(0);
                }
                bail!("container {id} does not exist");
            }
            let container = Container::load(&dir)?;
            let status = status_of(&container);
            if matches!(status, "running" | "paused") && !force {
                bail!("cannot delete container {id} that is not stopped: {status}");
            }
            container.destroy(&Runtime::default())?;
            Ok(0)
        }
        "exec" => exec(global, args),
        "ps" => {
            let json = args.flag(&["--format", "-f"]).as_deref() == Some("json");
            let id = args.positional("container id")?;
            let pids = load(global, &id)?.processes();
            if json {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("PID");
                for pid in pids {
                    println!("{pid}");
                }
            }
            Ok(0)
        }
        "pause" | "resume" => {
            let id = args.positional("container id")?;
            load(global, &id)?.set_paused(verb == "pause")?;
            Ok(0)
        }
        "update" => {
            let resources = update::resources(&mut args)?;
            let id = args.positional("container id")?;
            load(global, &id)?.update(&resources)?;
            Ok(0)
        }
        "checkpoint" => {
            let criu = CriuFlags::parse(&mut args)?;
            let leave_running = args.switch(&["--leave-running"]);
            let pre_dump = args.switch(&["--pre-dump"]);
            let parent_path = args.flag(&["--parent-path"]).map(PathBuf::from);
            let id = args.positional("container id")?;
            let container = load(global, &id)?;
            let options = CheckpointOptions { criu: criu.options, leave_running, pre_dump, parent_path };
            container.checkpoint(&Runtime::default(), &global.criu()?, &options)?;
            // As runc: a container CRIU has dumped and killed is gone, unless it was only a pre-dump.
            if !leave_running && !pre_dump {
                container.destroy(&Runtime::default())?;
            }
            Ok(0)
        }
        "restore" => restore(global, args),
        "spec" => {
            let rootless = args.switch(&["--rootless"]);
            let bundle = args.flag(&["--bundle", "-b"]).map(PathBuf::from).unwrap_or(std::env::current_dir()?);
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} exists: remove it first", path.display());
            }
            let spec = default_spec(rootless);
            fs::write(&path, serde_json::to_vec_pretty(&spec)?).with_context(|| format!("write {}", path.display()))?;
            Ok(0)
        }
        "features" => {
            println!("{}", serde_json::to_string_pretty(&myshim_runtime::features::document())?);
            Ok(0)
        }
        other => bail!("unknown command {other:?}"),
    }
}

/// Flags shared by create and run.
struct CreateFlags {
    bundle: PathBuf,
    pid_file: Option<PathBuf>,
    console_socket: Option<PathBuf>,
    preserve_fds: usize,
}

impl CreateFlags {
    fn parse(args: &mut Args) -> Result<CreateFlags> {
        let bundle = args.flag(&["--bundle", "-b"]).map(PathBuf::from).unwrap_or(std::env::current_dir()?);
        let bundle = fs::canonicalize(&bundle).with_context(|| format!("bundle {}", bundle.display()))?;
        let pid_file = args.flag(&["--pid-file"]).map(PathBuf::from);
        let console_socket = args.flag(&["--console-socket"]).map(PathBuf::from);
        // runc's --no-pivot would chroot: this runtime always pivots, so the flag is accepted and has no effect.
        args.switch(&["--no-pivot"]);
        args.switch(&["--no-new-keyring"]);
        let preserve_fds = preserve_fds(args)?;
        Ok(CreateFlags { bundle, pid_file, console_socket, preserve_fds })
    }
}

/// The CRIU flags checkpoint and restore share (runc's names). Lazy pages and page servers are not
/// offered: they are refused rather than ignored.
struct CriuFlags {
    options: CriuOptions,
}

impl CriuFlags {
    fn parse(args: &mut Args) -> Result<CriuFlags> {
        for unsupported in ["--lazy-pages", "--page-server", "--status-fd"] {
            if args.switch(&[unsupported]) || args.items.iter().any(|a| a.starts_with(&format!("{unsupported}="))) {
                bail!("{unsupported} is not supported");
            }
        }
        let image_path = match args.flag(&["--image-path"]) {
            Some(path) => PathBuf::from(path),
            None => std::env::current_dir()?.join("checkpoint"),
        };
        let cgroups_mode = args.flag(&["--manage-cgroups-mode"]).map(|m| CgroupsMode::from_name(&m)).transpose()?;
        let options = CriuOptions {
            image_path,
            work_path: args.flag(&["--work-path"]).map(PathBuf::from),
            tcp_established: args.switch(&["--tcp-established"]),
            ext_unix_sk: args.switch(&["--ext-unix-sk"]),
            shell_job: args.switch(&["--shell-job"]),
            file_locks: args.switch(&["--file-locks"]),
            cgroups_mode,
            empty_namespaces: args.flags(&["--empty-ns"]),
            auto_dedup: args.switch(&["--auto-dedup"]),
        };
        Ok(CriuFlags { options })
    }
}

/// runc's example bundle (`runc spec`): `sh` on a terminal, three capabilities (ambient too, as runc
/// has them, which only warns: they are not inheritable), the usual mounts and namespaces (a cgroup
/// namespace too where /sys/fs/cgroup is cgroup v2); rootless, a user namespace mapping root to the
/// caller and the host's /sys bound instead of a new sysfs.
fn default_spec(rootless: bool) -> serde_json::Value {
    let mut namespaces = vec!["pid", "network", "ipc", "uts", "mount"];
    let cgroup_v2 = myshim_runtime::cgroups::hierarchies().iter().any(|h| h.unified && h.mount_point == Path::new("/sys/fs/cgroup"));
    if cgroup_v2 {
        namespaces.push("cgroup");
    }
    if rootless {
        namespaces.retain(|ns| *ns != "network");
        namespaces.push("user");
    }
    let namespaces: Vec<serde_json::Value> = namespaces.into_iter().map(|ns| serde_json::json!({"type": ns})).collect();
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let mut spec = serde_json::json!({
        "ociVersion": myshim_runtime::features::OCI_VERSION_MAX,
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "myshim",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if rootless {
        // As runc's: root inside is the caller; no new network namespace; devpts without the tty
        // group (unmapped); the host's /sys bound (a sysfs cannot be mounted); no device rules.
        let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        let linux = &mut spec["linux"];
        linux["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        linux["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": gid, "size": 1}]);
        linux.as_object_mut().map(|l| l.remove("resources"));
        spec["mounts"][2]["options"] = serde_json::json!(["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]);
        spec["mounts"][5] = serde_json::json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
    }
    spec
}

/// Returns once a thread of the parent process blocks in a wait for a child (its wait channel is
/// `do_wait`), or after `limit`.
fn wait_until_the_parent_waits(limit: std::time::Duration) {
    let parent = std::os::unix::process::parent_id();
    let deadline = std::time::Instant::now() + limit;
    let waiting = || {
        fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|task| fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w.trim() == "do_wait"))
    };
    while !waiting() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

/// `restore`: a new container from the bundle with the checkpoint's processes; without `--detach`
/// it waits for the restored init and returns its exit status, as `run` does.
fn restore(global: &Global, mut args: Args) -> Result<u8> {
    let criu = CriuFlags::parse(&mut args)?;
    let flags = CreateFlags::parse(&mut args)?;
    let detach = args.switch(&["--detach", "-d"]);
    let no_subreaper = args.switch(&["--no-subreaper"]);
    // What go-runc may pass along and runc's restore ignores or has no use for here.
    args.flag(&["--parent-path"]);
    args.flag(&["--lsm-profile"]);
    args.flag(&["--lsm-mount-context"]);
    let id = args.positional("container id")?;
    if !detach && !no_subreaper {
        sys::become_child_subreaper()?;
    }
    fs::create_dir_all(&global.root).with_context(|| format!("create root {}", global.root.display()))?;
    let options = CreateOptions {
        id: &id,
        bundle: &flags.bundle,
        state_dir: state::dir_in_root(&global.root, &id)?,
        rootfs_mounts: &[],
        stdio: own_stdio()?,
        cgroup_driver: global.cgroup_driver(),
        preserved_fds: Vec::new(),
    };
    let mut container = Container::restore(&Runtime::default(), &global.criu()?, options, &criu.options)?;
    finish_spawn(container.pid(), container.take_console(), flags.pid_file.as_deref(), flags.console_socket.as_deref())?;
    if detach {
        return Ok(0);
    }
    let code = sys::wait_for_exit(container.pid()).context("wait for the restored container")?;
    container.destroy(&Runtime::default())?;
    Ok(code as u8)
}

/// `--preserve-fds N`: how many descriptors after stdio the program gets.
fn preserve_fds(args: &mut Args) -> Result<usize> {
    match args.flag(&["--preserve-fds"]) {
        Some(n) => n.parse().with_context(|| format!("--preserve-fds {n:?}: not a number")),
        None => Ok(0),
    }
}

/// This process's descriptors 3 … 3+count-1, for the program.
fn preserved_descriptors(count: usize) -> Result<Vec<OwnedFd>> {
    (0..count as i32)
        .map(|i| {
            // SAFETY: the descriptor is only borrowed to duplicate it; the caller handed it to us to pass on.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(3 + i) };
            fd.try_clone_to_owned().with_context(|| format!("--preserve-fds: descriptor {} is not open", 3 + i))
        })
        .collect()
}

fn own_stdio() -> Result<Stdio> {
    Ok(Stdio {
        stdin: std::io::stdin().as_fd().try_clone_to_owned()?,
        stdout: std::io::stdout().as_fd().try_clone_to_owned()?,
        stderr: std::io::stderr().as_fd().try_clone_to_owned()?,
    })
}

fn create(global: &Global, id: &str, flags: &CreateFlags) -> Result<Container> {
    fs::create_dir_all(&global.root).with_context(|| format!("create root {}", global.root.display()))?;
    let cgroup_driver = global.cgroup_driver();
    let preserved_fds = preserved_descriptors(flags.preserve_fds)?;
    let options = CreateOptions { id, bundle: &flags.bundle, state_dir: state::dir_in_root(&global.root, id)?, rootfs_mounts: &[], stdio: own_stdio()?, cgroup_driver, preserved_fds };
    let mut container = Container::create(&Runtime::default(), options)?;
    finish_spawn(container.pid(), container.take_console(), flags.pid_file.as_deref(), flags.console_socket.as_deref())?;
    Ok(container)
}

/// Writes the pid file and hands a terminal's master to the console socket.
fn finish_spawn(pid: u32, console: Option<OwnedFd>, pid_file: Option<&Path>, console_socket: Option<&Path>) -> Result<()> {
    match (console, console_socket) {
        (Some(master), Some(socket)) => send_console(&master, socket)?,
        (Some(_), None) => bail!("process.terminal is set but no --console-socket was given"),
        (None, _) => {}
    }
    if let Some(path) = pid_file {
        let temporary = path.with_extension("tmp");
        fs::write(&temporary, pid.to_string()).with_context(|| format!("write {}", temporary.display()))?;
        fs::rename(&temporary, path).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// runc's console socket protocol: connect, send the master as SCM_RIGHTS with its name as data.
fn send_console(master: &OwnedFd, socket: &Path) -> Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| format!("connect to console socket {}", socket.display()))?;
    let fds = [master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(stream.as_raw_fd(), &[std::io::IoSlice::new(name)], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .with_context(|| format!("send the terminal to {}", socket.display()))?;
    Ok(())
}

/// The flags of `exec` that take a value (everything after the container id is the command).
const EXEC_VALUE_FLAGS: &[&str] = &[
    "--process", "-p", "--pid-file", "--console-socket", "--cwd", "--env", "-e", "--user", "-u", "--additional-gids", "-g", "--cap", "-c",
    "--apparmor", "--process-label", "--cgroup", "--preserve-fds",
];

fn exec(global: &Global, mut args: Args) -> Result<u8> {
    let command = args.take_after_positional(EXEC_VALUE_FLAGS);
    let process_file = args.flag(&["--process", "-p"]);
    let detach = args.switch(&["--detach", "-d"]);
    let tty = args.switch(&["--tty", "-t"]);
    let pid_file = args.flag(&["--pid-file"]).map(PathBuf::from);
    let console_socket = args.flag(&["--console-socket"]).map(PathBuf::from);
    let cwd = args.flag(&["--cwd"]);
    let env = args.flags(&["--env", "-e"]);
    let user = args.flag(&["--user", "-u"]);
    let additional_gids = args.flags(&["--additional-gids", "-g"]);
    let caps = args.flags(&["--cap", "-c"]);
    let apparmor = args.flag(&["--apparmor"]);
    let process_label = args.flag(&["--process-label"]);
    let no_new_privs = args.switch(&["--no-new-privs"]);
    let sub_cgroup = args.flag(&["--cgroup"]);
    let preserved_fds = preserved_descriptors(preserve_fds(&mut args)?)?;
    let id = args.positional("container id")?;
    let container = load(global, &id)?;

    let mut process: oci_spec::runtime::Process = match process_file {
        Some(path) => {
            // As with runc: the process file stands alone (its env is not merged with the spec's).
            let text = fs::read(&path).with_context(|| format!("read {path}"))?;
            serde_json::from_slice(&text).with_context(|| format!("parse {path} (an OCI process)"))?
        }
        None => {
            if command.is_empty() {
                bail!("exec needs --process or a command");
            }
            // Like runc: the container's own process settings, with this command and the flags below.
            let spec = spec::load(&container.state().bundle)?;
            let mut process = spec.process().clone().ok_or_else(|| anyhow!("the container's spec has no process"))?;
            process.set_args(Some(command));
            process.set_terminal(Some(tty));
            if let Some(cwd) = cwd {
                process.set_cwd(cwd.into());
            }
            if let Some(user) = user {
                let (uid, gid) = user.split_once(':').unwrap_or((&user, "0"));
                let mut identity = process.user().clone();
                identity.set_uid(uid.parse().context("--user uid")?);
                identity.set_gid(gid.parse().context("--user gid")?);
                process.set_user(identity);
            }
            process
        }
    };
    // The spec's variables first, the exec's after them: the later value of a name wins.
    if !env.is_empty() {
        let mut all = process.env().clone().unwrap_or_default();
        all.extend(env);
        process.set_env(Some(all));
    }
    if !additional_gids.is_empty() {
        let mut identity = process.user().clone();
        let mut gids = identity.additional_gids().clone().unwrap_or_default();
        for gid in &additional_gids {
            gids.push(gid.parse().with_context(|| format!("--additional-gids {gid:?}: not a number"))?);
        }
        identity.set_additional_gids(Some(gids));
        process.set_user(identity);
    }
    if !caps.is_empty() {
        add_capabilities(&mut process, &caps)?;
    }
    if let Some(profile) = apparmor {
        process.set_apparmor_profile(Some(profile));
    }
    if let Some(label) = process_label {
        process.set_selinux_label(Some(label));
    }
    if no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if !detach {
        sys::become_child_subreaper()?;
    }
    let options = myshim_runtime::ExecOptions { preserved_fds, sub_cgroup };
    let started = container.exec_with(&Runtime::default(), process, own_stdio()?, options)?;
    finish_spawn(started.pid, started.console, pid_file.as_deref(), console_socket.as_deref())?;
    if detach {
        return Ok(0);
    }
    Ok(sys::wait_for_exit(started.pid).context("wait for the process")? as u8)
}

/// `--cap`: to the bounding, effective and permitted sets; never the inheritable or ambient ones (the
/// mistake of CVE-2022-29162: a non-root program would keep them across its own execs).
fn add_capabilities(process: &mut oci_spec::runtime::Process, names: &[String]) -> Result<()> {
    use oci_spec::runtime::Capability;
    let parsed: Vec<Capability> = names
        .iter()
        .map(|name| {
            let full = if name.starts_with("CAP_") { name.clone() } else { format!("CAP_{}", name.to_uppercase()) };
            serde_json::from_value(serde_json::Value::String(full)).map_err(|_| anyhow!("--cap {name:?}: unknown capability"))
        })
        .collect::<Result<_>>()?;
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let with = |set: &Option<std::collections::HashSet<Capability>>| {
        let mut set = set.clone().unwrap_or_default();
        set.extend(parsed.iter().cloned());
        Some(set)
    };
    let (bounding, effective, permitted) = (with(caps.bounding()), with(caps.effective()), with(caps.permitted()));
    caps.set_bounding(bounding).set_effective(effective).set_permitted(permitted);
    process.set_capabilities(Some(caps));
    Ok(())
}

fn load(global: &Global, id: &str) -> Result<Container> {
    let dir = state::dir_in_root(&global.root, id)?;
    if !dir.exists() {
        bail!("container {id} does not exist");
    }
    Ok(Container::load(&dir)?)
}

fn status_of(container: &Container) -> &'static str {
    if container.is_created() {
        "created"
    } else if !container.state().init_is_alive() {
        "stopped"
    } else if container.is_paused() {
        "paused"
    } else {
        "running"
    }
}

/// The OCI state document.
fn oci_state(container: &Container) -> serde_json::Value {
    let s = container.state();
    let status = status_of(container);
    serde_json::json!({
        "ociVersion": myshim_runtime::features::OCI_VERSION_MAX,
        "id": s.id,
        "status": status,
        "pid": if status == "stopped" { 0 } else { s.pid },
        "bundle": s.bundle,
        "rootfs": s.rootfs,
        "created": rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.created)),
        "owner": "",
        "annotations": s.annotations,
    })
}

fn parse_signal(text: &str) -> Result<u32> {
    if let Ok(n) = text.parse() {
        return Ok(n);
    }
    let name = text.to_uppercase();
    let name = if name.starts_with("SIG") { name } else { format!("SIG{name}") };
    let signal: nix::sys::signal::Signal = name.parse().with_context(|| format!("unknown signal {text:?}"))?;
    Ok(signal as u32)
}

/// A UTC time as RFC 3339 (what Go's time parser expects in `state` and logs).
fn rfc3339(time: std::time::SystemTime) -> String {
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_nanos()
    )
}
