//! Where the things under test are.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("integration/ is inside the workspace").to_path_buf()
}

/// The directory holding `containerd-shim-myshim-v1` (built by the test command before the tests).
pub fn shim_dir() -> PathBuf {
    std::env::var_os("MYSHIM_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
        target.join("debug")
    })
}

pub fn shim_binary() -> PathBuf {
    shim_dir().join("containerd-shim-myshim-v1")
}

/// The directory of the CRIU setup installed (trixie's CRIU 4.1 with its own glibc).
pub fn criu_dir() -> PathBuf {
    opt().join("criu/bin")
}

/// Where the setup command installed containerd and friends.
pub fn opt() -> PathBuf {
    std::env::var_os("MYSHIM_OPT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/opt/myshim"))
}

/// A scratch directory for one test, removed when dropped (also when the test fails).
pub fn scratch(name: &str) -> Scratch {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!("myshim-it-{}-{}-{name}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    Scratch(Some(dir))
}

pub struct Scratch(Option<PathBuf>);

impl Scratch {
    /// The directory, for an owner that removes it itself (after unmounting what it mounted there).
    pub fn into_path(mut self) -> PathBuf {
        self.0.take().expect("scratch directory")
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        self.0.as_deref().expect("scratch directory")
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        self
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
