//! The busybox image, built once per test run from Debian's busybox-static (no registry).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::paths;

pub const BUSYBOX: &str = "localhost/myshim/busybox:latest";
/// A Kubernetes pause image: busybox with an entrypoint that sleeps until SIGTERM, then exits 0.
pub const PAUSE: &str = "localhost/myshim/pause:latest";

/// The busybox image archive, built on first use into the target directory.
pub fn busybox_archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    built_once(&ARCHIVE, "busybox-image.tar", BUSYBOX, false)
}

/// The pause image archive, built on first use into the target directory.
pub fn pause_archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    built_once(&ARCHIVE, "pause-image.tar", PAUSE, true)
}

fn built_once(archive: &'static OnceLock<PathBuf>, file: &str, image: &str, pause: bool) -> PathBuf {
    archive
        .get_or_init(|| {
            let out = paths::shim_dir().join(file);
            build(&out, image, pause);
            out
        })
        .clone()
}

fn build(out: &std::path::Path, reference: &str, pause: bool) {
    let extra: &[String] = if pause { &["--pause".to_owned()] } else { &[] };
    build_with(out, reference, extra);
}

fn build_with(out: &Path, reference: &str, extra: &[String]) {
    let script = paths::workspace().join("integration/scripts/build-image.py");
    let status = Command::new("python3").arg(&script).args(["--ref", reference, "--out"]).arg(out).args(extra).status().expect("run build-image.py");
    assert!(status.success(), "building image {reference} failed");
}

/// The image of the escape tests: busybox plus hostile content.
pub const HOSTILE: &str = "localhost/myshim/hostile:latest";

/// Where the hostile image's `/hostdir` symlink points (climbing out of the root filesystem).
pub fn hostile_symlink_target() -> PathBuf {
    PathBuf::from(format!("/tmp/myshim-escape-target-{}", std::process::id()))
}

/// Builds the hostile image into `dir`: `/escape` (integration/escape/escape.c, static) and a setuid
/// root copy `/escape-suid`; `/evil-sh`, a script whose interpreter is `/proc/self/exe start`; device nodes
/// `/evil/mem` (c 1:1) and `/evil/sda` (b 8:0); symlinks `/sneaky -> /` and `/hostdir`, which climbs
/// out of the root to [`hostile_symlink_target`]. Like a typical glibc-based image, it carries the
/// shared libraries the shim binary links, so the kernel can run that binary inside the container.
pub fn hostile_archive(dir: &Path) -> PathBuf {
    let escape = dir.join("escape");
    let source = paths::workspace().join("integration/escape/escape.c");
    let status = Command::new("gcc").args(["-static", "-O2", "-Wall", "-o"]).arg(&escape).arg(&source).status().expect("run gcc (did integration/setup.sh run?)");
    assert!(status.success(), "compiling {} failed", source.display());
    let script = dir.join("evil-sh");
    // The binary is asked to act as `start`: it would read stdin, then a configuration the caller's
    // environment names.
    std::fs::write(&script, "#!/proc/self/exe start\n").unwrap();
    let out = dir.join("hostile-image.tar");
    let climb = format!("/hostdir=../../../../../../../..{}", hostile_symlink_target().display());
    let extra: Vec<String> = [
        format!("--add=/escape={}", escape.display()),
        format!("--add=/escape-suid={}:4755", escape.display()),
        format!("--add=/evil-sh={}", script.display()),
        "--device=/evil/mem=c:1:1".into(),
        "--device=/evil/sda=b:8:0".into(),
        "--symlink=/sneaky=/".into(),
        format!("--symlink={climb}"),
    ]
    .into_iter()
    .chain(shared_libraries(&paths::shim_binary()).into_iter().map(|(path, file)| format!("--add={}={}", path.display(), file.display())))
    .collect();
    build_with(&out, HOSTILE, &extra);
    out
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

/// The shared libraries (and the dynamic loader) `binary` needs: (path it is looked up at, file).
fn shared_libraries(binary: &Path) -> Vec<(PathBuf, PathBuf)> {
    let output = Command::new("ldd").arg(binary).output().expect("run ldd");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, target)) => target.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .map(|path| {
            let file = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            (path, file)
        })
        .collect()
}
