//! Podman (Debian's 4.3, installed by setup) with `myshim-runc` as its OCI runtime: storage and run
//! state in a directory of the test's own, cgroups (cgroupfs) below a parent of its own, no network
//! (Podman's default bridge would be the host's). Everything it made goes when the value is dropped.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::containerd::{CliOutput, CLIENT_LIMIT};
use crate::{bundle, leaks, paths};

/// The image the Podman tests run: the busybox root filesystem, imported.
pub const BUSYBOX: &str = "localhost/myshim/busybox:podman";

pub struct Podman {
    pub dir: PathBuf,
    /// Every container's cgroup lies below `/<namespace>` (where the leak checks look).
    pub namespace: String,
}

impl Podman {
    pub fn new(name: &str) -> Podman {
        let dir = paths::scratch(&format!("podman-{name}")).into_path();
        let podman = Podman { dir, namespace: format!("myshim-podman-{name}-{}", std::process::id()) };
        // The instance's own configuration (no system-wide one is read): the same as its flags.
        fs::write(podman.dir.join("containers.conf"), "[containers]\nlog_driver = \"k8s-file\"\n\n[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n").unwrap();
        let archive = podman.dir.join("busybox.tar");
        let status = Command::new("tar").arg("-C").arg(bundle::busybox_rootfs()).arg("-cf").arg(&archive).arg(".").status().expect("run tar");
        assert!(status.success(), "tar the busybox rootfs");
        podman.podman(&["import", archive.to_str().unwrap(), BUSYBOX]).ok();
        podman
    }

    /// `podman` with this instance's storage, run state and runtime.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .arg("--runtime")
            .arg(paths::shim_dir().join("myshim-runc"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file", "--storage-driver", "overlay"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            // CRIU where Podman (and the runtime it starts) look for it: on PATH.
            .env("PATH", format!("{}:{}", paths::criu_dir().display(), std::env::var("PATH").unwrap_or_default()))
            .stdin(Stdio::null());
        command
    }

    pub fn podman(&self, args: &[&str]) -> CliOutput {
        CliOutput::run(self.command(args), CLIENT_LIMIT)
    }

    /// `podman run` with what every test's container needs here: no network, a cgroup below the
    /// instance's parent, and limits root may set (it lacks CAP_SYS_RESOURCE, and Podman's default
    /// nofile and nproc limits are above the host's hard ones).
    pub fn run(&self, extra: &[&str], command: &[&str]) -> CliOutput {
        self.podman(&self.run_args(extra, command).iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub fn run_args(&self, extra: &[&str], command: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["run", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"].map(String::from).to_vec();
        args.extend(["--cgroup-parent".to_owned(), format!("/{}", self.namespace)]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(BUSYBOX.to_owned());
        args.extend(command.iter().map(|s| s.to_string()));
        args
    }

    /// A field of `podman inspect` (a Go template).
    pub fn inspect(&self, what: &str, template: &str) -> String {
        self.podman(&["inspect", "--format", template, what]).ok().stdout.trim().to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        leaks::remove_containers(&self.namespace, &self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}
