//! The busybox image, built once per test run from Debian's busybox-static (no registry).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::paths;

pub const BUSYBOX: &str = "localhost/myshim/busybox:latest";
/// A Kubernetes pause image: busybox with an entrypoint that sleeps until SIGTERM, then exits 0.
pub const PAUSE: &str = "localhost/myshim/pause:latest";

/// The image archive, built on first use into the target directory.
pub fn busybox_archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            let out = paths::shim_dir().join("busybox-image.tar");
            build(&out, BUSYBOX, false);
            out
        })
        .clone()
}

pub fn pause_archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            let out = paths::shim_dir().join("pause-image.tar");
            build(&out, PAUSE, true);
            out
        })
        .clone()
}

fn build(out: &std::path::Path, reference: &str, pause: bool) {
    let script = paths::workspace().join("integration/scripts/build-image.py");
    let mut command = Command::new("python3");
    command.arg(&script).args(["--ref", reference, "--out"]).arg(out);
    if pause {
        command.arg("--pause");
    }
    let status = command.status().expect("run build-image.py");
    assert!(status.success(), "building image {reference} failed");
}

/// What `ls /` prints in a container of the busybox image.
pub fn busybox_root_listing() -> Vec<String> {
    let mut names: Vec<String> = ["bin", "dev", "etc", "home", "linuxrc", "proc", "root", "run", "sbin", "sys", "tmp", "usr", "var"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.sort();
    names
}
