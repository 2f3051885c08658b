//! A private containerd instance for one test.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{image, leaks, paths};

pub const RUNTIME: &str = "io.containerd.myshim.v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1_6,
    V1_7,
    V2_1,
}

impl Version {
    pub fn dir_name(self) -> &'static str {
        match self {
            Version::V1_6 => "1.6",
            Version::V1_7 => "1.7",
            Version::V2_1 => "2.1",
        }
    }

    pub fn bin_dir(self) -> PathBuf {
        paths::opt().join("containerd").join(self.dir_name()).join("usr/bin")
    }
}

pub struct Containerd {
    pub version: Version,
    pub dir: PathBuf,
    pub namespace: String,
    process: Child,
    /// Container ids the test used, to look for their shim sockets afterwards.
    ids: std::sync::Mutex<Vec<String>>,
    /// The network namespace this instance runs in (CRI instances), created and removed by it.
    pub netns: Option<String>,
}

/// How long a test waits for one call of a command-line client before it fails the test.
pub const CLIENT_LIMIT: Duration = Duration::from_secs(300);

/// The result of a command-line client's call (`ctr`, `docker`, `podman`).
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn from(output: Output) -> CliOutput {
        CliOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs a client to its end, but for at most `limit`: a client that hangs (a `docker wait` for an
    /// event that never comes) is killed and fails its test with what it printed, instead of
    /// holding up every test after it. Code -1 and a note in `stderr` mark a client that ran out.
    pub fn run(mut command: Command, limit: Duration) -> CliOutput {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        let description = format!("{command:?}");
        // A group of its own, so that running out kills whatever the client started as well.
        let mut child = command
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {description}: {e}"));
        let read_all = |mut pipe: Box<dyn Read + Send>| {
            let (sender, receiver) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                let _ = sender.send(bytes);
            });
            receiver
        };
        let stdout = read_all(Box::new(child.stdout.take().unwrap()));
        let stderr = read_all(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                _ if Instant::now() >= deadline => {
                    leaks::signal_group(child.id(), nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait();
                    break None;
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let collect = |receiver: std::sync::mpsc::Receiver<Vec<u8>>| {
            String::from_utf8_lossy(&receiver.recv_timeout(Duration::from_secs(5)).unwrap_or_default()).into_owned()
        };
        let mut output = CliOutput { code: status.and_then(|s| s.code()).unwrap_or(-1), stdout: collect(stdout), stderr: collect(stderr) };
        if status.is_none() {
            output.stderr.push_str(&format!("\n(killed: still running after {limit:?}: {description})"));
        }
        output
    }

    /// Panics with the whole output unless the command exited 0.
    pub fn ok(self) -> CliOutput {
        assert_eq!(self.code, 0, "command failed: stdout {:?} stderr {:?}", self.stdout, self.stderr);
        self
    }
}

impl Containerd {
    /// Starts containerd `version` in a fresh directory, waits until it answers, and imports the
    /// busybox image into a namespace of its own.
    pub fn start(version: Version, name: &str) -> Containerd {
        Containerd::start_with(version, name, None)
    }

    /// Like [`Containerd::start`], with a myshim configuration file for this instance's shims
    /// (containerd passes its environment, `MYSHIM_CONFIG` included, to them).
    pub fn start_with(version: Version, name: &str, shim_config: Option<&str>) -> Containerd {
        let dir = paths::scratch(&format!("containerd-{}-{name}", version.dir_name())).into_path();
        if let Some(config) = shim_config {
            fs::write(dir.join("myshim.toml"), config).expect("write the shim configuration");
        }
        // Unique per instance: cgroup paths (/<namespace>/<id>) are shared by every containerd on the host.
        let namespace = format!("myshim-{}-{}-{}", name.replace('_', "-"), version.dir_name().replace('.', ""), std::process::id());
        fs::write(dir.join("config.toml"), config(version, &dir)).expect("write containerd config");
        let process = spawn(version, &dir, None);
        let containerd = Containerd { version, dir, namespace, process, ids: Default::default(), netns: None };
        containerd.wait_ready();
        containerd.ctr(&["images", "import", image::busybox_archive().to_str().unwrap()]).ok();
        containerd
    }

    /// A containerd with the CRI plugin and a `myshim` runtime handler, in a network namespace of its
    /// own (so CNI's bridge and the "host" network of host-network pods stay inside the test), with
    /// the busybox and pause images in namespace `k8s.io`.
    pub fn start_cri(version: Version, name: &str, handler_options: &str) -> Containerd {
        let dir = paths::scratch(&format!("containerd-cri-{}-{name}", version.dir_name())).into_path();
        let netns = format!("myshim-{}-{}-{}", name, version.dir_name().replace('.', ""), std::process::id());
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &netns]);
        ip(&["netns", "exec", &netns, "ip", "link", "set", "lo", "up"]);
        fs::create_dir_all(dir.join("cni/net.d")).unwrap();
        fs::write(dir.join("cni/net.d/10-myshim.conflist"), cni_config(&dir)).unwrap();
        fs::write(dir.join("config.toml"), cri_config(version, &dir, handler_options)).expect("write containerd config");
        let process = spawn(version, &dir, Some(&netns));
        let containerd = Containerd { version, dir, namespace: "k8s.io".into(), process, ids: Default::default(), netns: Some(netns) };
        containerd.wait_ready();
        containerd.ctr(&["images", "import", image::busybox_archive().to_str().unwrap()]).ok();
        containerd.ctr(&["images", "import", image::pause_archive().to_str().unwrap()]).ok();
        containerd
    }

    /// The network namespaces containerd's CRI made for pods: kept in the instance's state
    /// directory (`netns_mounts_under_state_dir`), so a failed test's are unmounted with the instance.
    pub fn pod_network_namespaces(&self) -> Vec<PathBuf> {
        let plugins = fs::read_dir(self.dir.join("state")).into_iter().flatten().flatten();
        plugins.flat_map(|plugin| fs::read_dir(plugin.path().join("netns")).into_iter().flatten().flatten()).map(|e| e.path()).collect()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The bundle directory containerd makes for container `id`.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join("state/io.containerd.runtime.v2.task").join(&self.namespace).join(id)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.ctr(&["version"]).code == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd {} did not come up; log:\n{}", self.version.dir_name(), self.log());
    }

    /// Runs `ctr` of this version against this instance, in its namespace.
    pub fn ctr(&self, args: &[&str]) -> CliOutput {
        CliOutput::run(self.ctr_command(args), CLIENT_LIMIT)
    }

    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.version.bin_dir().join("ctr"));
        command.arg("--address").arg(self.socket()).arg("--namespace").arg(&self.namespace).args(args);
        command.stdin(Stdio::null());
        command
    }

    /// The `--cgroup` flag of `ctr run` for container `id`: ctr's own default (`/<namespace>/<id>`),
    /// or a systemd scope under the systemd driver (see [`crate::host`]).
    pub fn cgroup_flag(&self, id: &str) -> [String; 2] {
        ["--cgroup".into(), crate::host::cgroups_path(&self.namespace, id)]
    }

    /// `ctr run --runtime io.containerd.myshim.v1 --rm <extra…> busybox <id> <command…>`.
    pub fn run(&self, id: &str, extra: &[&str], command: &[&str]) -> CliOutput {
        self.track(id);
        let cgroup = self.cgroup_flag(id);
        let mut args = vec!["run", "--runtime", RUNTIME, "--rm", &cgroup[0], &cgroup[1]];
        args.extend_from_slice(extra);
        args.push(image::BUSYBOX);
        args.push(id);
        args.extend_from_slice(command);
        self.ctr(&args)
    }

    /// `ctr run -d` of a long-running container.
    pub fn run_detached(&self, id: &str, command: &[&str]) {
        self.track(id);
        let cgroup = self.cgroup_flag(id);
        let mut args = vec!["run", "--runtime", RUNTIME, "-d", &cgroup[0], &cgroup[1], image::BUSYBOX, id];
        args.extend_from_slice(command);
        self.ctr(&args).ok();
    }

    /// Remembers a container id for the leak check.
    pub fn track(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_owned());
    }

    pub fn used_ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }

    /// Removes a container's task (killing it) and the container.
    pub fn remove(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "KILL", id]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ctr(&["task", "delete", id]).code != 0 && Instant::now() < deadline {
            if !self.ctr(&["task", "ls", "-q"]).stdout.lines().any(|l| l == id) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.ctr(&["container", "rm", id]);
    }

    /// The status column of `ctr task ls` for `id`.
    pub fn task_status(&self, id: &str) -> Option<String> {
        self.ctr(&["task", "ls"])
            .stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&id))
            .and_then(|cols| cols.get(2).map(|s| s.to_string()))
    }

    /// containerd's own log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Lines of the log containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        fs::File::open(self.dir.join("containerd.log"))
            .map(|f| BufReader::new(f).lines().map_while(Result::ok).filter(|l| l.contains(needle)).collect())
            .unwrap_or_default()
    }

    /// Asserts that nothing of this instance's containers is left: shim processes, mounts, cgroups,
    /// sockets.
    /// A shim exits shortly after containerd's Shutdown, so the check waits a moment for that.
    pub fn assert_no_leftovers(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = leaks::find(self);
            if found.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "leftovers: {found:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops containerd (SIGTERM, then SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        stop_process(&mut self.process, Duration::from_secs(10));
    }

    /// Kills containerd with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Starts containerd again on the same directory (after [`Containerd::stop`]).
    pub fn restart(&mut self) {
        self.process = spawn(self.version, &self.dir, self.netns.as_deref());
        self.wait_ready();
    }
}

/// Starts containerd on the instance directory, with the shim's directory first on its PATH (then
/// containerd's and CRIU's, where an operator would have them) and its output appended to the
/// instance's log.
fn spawn(version: Version, dir: &Path, netns: Option<&str>) -> Child {
    let log = fs::OpenOptions::new().create(true).append(true).open(dir.join("containerd.log")).expect("open containerd log");
    let path = format!(
        "{}:{}:{}:{}",
        paths::shim_dir().display(),
        version.bin_dir().display(),
        paths::criu_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // nsenter joins only the network namespace (unlike `ip netns exec`, which also remounts /sys
    // and would hide the cgroup hierarchies) and executes containerd in place: the pid is containerd's.
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(version.bin_dir().join("containerd"));
            c
        }
        None => Command::new(version.bin_dir().join("containerd")),
    };
    if dir.join("myshim.toml").exists() {
        command.env("MYSHIM_CONFIG", dir.join("myshim.toml"));
    } else {
        command.env_remove("MYSHIM_CONFIG");
    }
    command
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("PATH", path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start containerd {}: {e} (did integration/setup.sh run?)", version.dir_name()))
}

/// Stops a daemon the tests started: SIGTERM, and SIGKILL if it is still there after `grace`.
pub(crate) fn stop_process(child: &mut Child, grace: Duration) {
    leaks::signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Containerd {
    fn drop(&mut self) {
        stop_process(&mut self.process, Duration::from_secs(10));
        leaks::clean_up(self);
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of containerd {} log ---", self.version.dir_name());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(netns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
    }
}

/// A bridge network with a private subnet; IPAM state stays in the instance directory.
fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "myshim-test",
        "plugins": [{
            "type": "bridge",
            "bridge": "myshim0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.88.77.0/24"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": dir.join("cni/ipam")
            }
        }]
    })
    .to_string()
}

/// containerd's configuration with the CRI plugin and the `myshim` handler.
fn cri_config(version: Version, dir: &Path, handler_options: &str) -> String {
    let d = dir.display();
    let common = instance_config(version, dir, r#""io.containerd.nri.v1.nri""#);
    let pause = image::PAUSE;
    match version {
        Version::V2_1 => format!(
            r#"{common}
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{pause}"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["/usr/lib/cni"]
  conf_dir = "{d}/cni/net.d"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.myshim]
  runtime_type = "io.containerd.myshim.v1"
{handler_options}
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_port = "0"
"#
        ),
        _ => format!(
            r#"{common}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{d}/cni/net.d"

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.myshim]
  runtime_type = "io.containerd.myshim.v1"
{handler_options}"#
        ),
    }
}

/// containerd's configuration without CRI.
fn config(version: Version, dir: &Path) -> String {
    let disabled = match version {
        Version::V1_6 => r#""io.containerd.grpc.v1.cri""#,
        Version::V1_7 => r#""io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri""#,
        Version::V2_1 => {
            r#""io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.nri.v1.nri""#
        }
    };
    instance_config(version, dir, disabled)
}

/// What every private instance needs: its own root, state, sockets and opt directory under `dir`,
/// and the plugins it does without.
fn instance_config(version: Version, dir: &Path, disabled_plugins: &str) -> String {
    let d = dir.display();
    let config_version = if version == Version::V2_1 { 3 } else { 2 };
    format!(
        r#"version = {config_version}
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [{disabled_plugins}]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_hangs_is_killed_at_its_limit() {
        let started = Instant::now();
        let mut command = Command::new("sh");
        command.args(["-c", "echo begun; sleep 30"]);
        let out = CliOutput::run(command, Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        assert_eq!(out.code, -1);
        assert_eq!(out.stdout, "begun\n");
        assert!(out.stderr.contains("still running after"), "{}", out.stderr);

        let out = CliOutput::run(Command::new("true"), Duration::from_secs(30));
        assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    }
}
