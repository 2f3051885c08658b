//! Docker Engine (Debian's 28.x, unpacked by setup under `/opt/myshim/docker`) started by a test
//! against one of its private containerd instances, as an operator runs it with an external
//! containerd: its own data root, exec root, socket and pid file, its own containerd namespace and
//! cgroup parent, in a network namespace of its own (its bridge, container networks and published
//! ports stay there), without iptables. Everything it made goes when the value is dropped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::containerd::{stop_process, CliOutput, Containerd, CLIENT_LIMIT};
use crate::{bundle, leaks, paths};

/// The image the Docker tests run: the busybox root filesystem, imported.
pub const BUSYBOX: &str = "localhost/myshim/busybox:docker";

pub struct Docker {
    pub dir: PathBuf,
    process: Child,
    netns: String,
    /// The containerd namespace dockerd keeps its containers in.
    pub namespace: String,
    /// Every container's cgroup lies below it: `/<namespace>`, where the leak checks look.
    pub cgroup_parent: String,
}

/// Where setup put Docker's binaries (dockerd, docker, docker-proxy, docker-init).
pub fn bin_dir() -> PathBuf {
    paths::opt().join("docker/bin")
}

impl Docker {
    /// Starts dockerd against `containerd` with `daemon_json` as its configuration file, waits until
    /// it answers and imports the busybox image.
    pub fn start(containerd: &Containerd, name: &str, daemon_json: &serde_json::Value) -> Docker {
        let dir = paths::scratch(&format!("docker-{name}")).into_path();
        let tag = format!("{}-{}", name, std::process::id());
        let netns = format!("myshim-docker-{tag}");
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &netns]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        fs::write(dir.join("daemon.json"), serde_json::to_vec_pretty(daemon_json).unwrap()).unwrap();
        let namespace = format!("myshim-docker-{tag}");
        let cgroup_parent = format!("/{namespace}");
        let process = spawn(&dir, &netns, containerd, &namespace, &cgroup_parent);
        let docker = Docker { dir, process, netns, namespace, cgroup_parent };
        docker.wait_ready();
        docker.import_busybox();
        docker
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// `docker` against this daemon.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin_dir().join("docker"));
        command.arg("--host").arg(format!("unix://{}", self.socket().display())).args(args).env("DOCKER_CONFIG", self.dir.join("client")).stdin(Stdio::null());
        command
    }

    pub fn docker(&self, args: &[&str]) -> CliOutput {
        CliOutput::run(self.command(args), CLIENT_LIMIT)
    }

    /// A command run in dockerd's network namespace (to reach a published port).
    pub fn in_network(&self, args: &[&str]) -> CliOutput {
        let output = Command::new("nsenter").arg(format!("--net=/run/netns/{}", self.netns)).args(args).stdin(Stdio::null()).output().expect("run nsenter");
        CliOutput::from(output)
    }

    /// A field of `docker inspect` (a Go template, `{{.State.ExitCode}}`).
    pub fn inspect(&self, what: &str, template: &str) -> String {
        self.docker(&["inspect", "--format", template, what]).ok().stdout.trim().to_owned()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.docker(&["version", "--format", "{{.Server.Version}}"]).code != 0 {
            assert!(Instant::now() < deadline, "dockerd did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn import_busybox(&self) {
        let archive = self.dir.join("busybox.tar");
        let status = Command::new("tar").arg("-C").arg(bundle::busybox_rootfs()).arg("-cf").arg(&archive).arg(".").status().expect("run tar");
        assert!(status.success(), "tar the busybox rootfs");
        self.docker(&["import", archive.to_str().unwrap(), BUSYBOX]).ok();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Stops dockerd (SIGTERM, then SIGKILL) and waits for it; containers stay under live restore.
    pub fn stop(&mut self) {
        stop_process(&mut self.process, Duration::from_secs(20));
    }

    /// Starts dockerd again on the same directories (after [`Docker::stop`]).
    pub fn restart(&mut self, containerd: &Containerd) {
        self.process = spawn(&self.dir, &self.netns, containerd, &self.namespace, &self.cgroup_parent);
        self.wait_ready();
    }
}

fn spawn(dir: &Path, netns: &str, containerd: &Containerd, namespace: &str, cgroup_parent: &str) -> Child {
    let log = fs::OpenOptions::new().create(true).append(true).open(dir.join("dockerd.log")).expect("open dockerd log");
    let path = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg(bin_dir().join("dockerd"))
        .arg("--containerd")
        .arg(containerd.socket())
        .args(["--containerd-namespace", namespace, "--containerd-plugins-namespace", &format!("{namespace}-plugins")])
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("docker.pid"))
        .arg("--host")
        .arg(format!("unix://{}", dir.join("docker.sock").display()))
        .arg("--config-file")
        .arg(dir.join("daemon.json"))
        .args(["--cgroup-parent", cgroup_parent, "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--log-level", "debug"])
        .env("PATH", path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .expect("start dockerd (did integration/setup.sh run?)")
}

impl Drop for Docker {
    fn drop(&mut self) {
        // Containers first (with dockerd still there to remove them), then dockerd, then what is
        // left of theirs: processes in the cgroup parent, mounts, groups.
        let ids = self.docker(&["ps", "-aq"]).stdout;
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = self.docker(&["rm", "-f", id]);
        }
        stop_process(&mut self.process, Duration::from_secs(20));
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of dockerd's log ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        leaks::remove_containers(&self.namespace, &self.dir);
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
