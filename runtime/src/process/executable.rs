//! The helper binary, opened so that nothing running it can be used to change it, and the check that
//! keeps a container from using the binary's command line.
//!
//! A helper starts as the runtime's own host binary and lives in the container's namespaces until it
//! execs the user's program; a program in the container can also make the kernel run that binary as
//! its interpreter (a script starting with `#!/proc/self/exe`, executed by the helper). CVE-2019-5736
//! showed that such a process's `/proc/<pid>/exe` can then be reopened for writing from inside the
//! container and the host binary replaced. Being non-dumpable covers the helper itself, not the
//! interpreter trick, and "the binary is busy" (ETXTBSY) is no defence once it stops running.
//!
//! So helpers are executed from a copy that is read-only *below* the mount, where no mount flag can
//! be cleared: a private overlayfs whose only layers are the binary's directory and an empty one (an
//! overlay without an upper layer has a read-only superblock). A read-only bind mount would not do:
//! `mount_setattr` does not check who owns a detached mount, so a process with `CAP_SYS_ADMIN` in a
//! user namespace of its own can clear its read-only flag and then write or `chmod` the host file.
//! Where an overlay cannot be made, the binary is copied into a sealed memfd (what runc does), whose
//! owner and mode are put back before every use. Either is made once per process and kept.

use std::ffi::CStr;
#[cfg(test)]
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode};

use crate::error::{Error, Result};
use crate::mount_api::{FsContext, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// The empty lower layer of the overlay (overlayfs needs two layers to run without an upper one, and
/// will not take a detached mount as a layer).
const EMPTY_LAYER: &str = "/run/myshim/empty";

/// The mode a sealed copy keeps: executable by anyone, writable by nobody.
const SEALED_COPY_MODE: u32 = 0o555;

/// How the binary is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// The binary seen through a private overlayfs without an upper layer.
    ReadOnlyOverlay,
    /// A sealed in-memory copy.
    SealedCopy,
}

/// An executable the runtime starts helpers from, by descriptor (`execveat`), never by path.
#[derive(Debug)]
pub struct HelperExecutable {
    fd: OwnedFd,
    path: PathBuf,
    protection: Protection,
}

impl HelperExecutable {
    /// Opens `path` (the runtime's own binary is `/proc/self/exe`) through a read-only overlay, or,
    /// where the kernel cannot make one, as a sealed copy.
    pub fn open(path: &Path) -> Result<HelperExecutable> {
        match read_only_overlay(path) {
            Ok(fd) => Ok(HelperExecutable { fd, path: path.to_owned(), protection: Protection::ReadOnlyOverlay }),
            Err(e) => {
                tracing::debug!(error = %e, "no read-only overlay for the helper binary: using a sealed copy");
                HelperExecutable::sealed_copy(path)
            }
        }
    }

    /// A sealed memfd copy of `path` (the fallback of [`HelperExecutable::open`]).
    pub fn sealed_copy(path: &Path) -> Result<HelperExecutable> {
        let fd = sealed_copy(path).map_err(|e| Error::io(format!("copy the helper binary {} into a sealed memfd", path.display()), e))?;
        Ok(HelperExecutable { fd, path: path.to_owned(), protection: Protection::SealedCopy })
    }

    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// The path the binary was opened from, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor to execute. A sealed copy's contents cannot change, but its owner and mode can
    /// (by a container root that reached it while it ran as an interpreter): they are put back first.
    pub(crate) fn raw_fd(&self) -> io::Result<RawFd> {
        if self.protection == Protection::SealedCopy {
            let stat = fstat(self.fd.as_fd())?;
            let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
            if stat.st_uid != uid.as_raw() || stat.st_gid != gid.as_raw() {
                nix::unistd::fchown(self.fd.as_fd(), Some(uid), Some(gid))?;
            }
            if stat.st_mode & 0o7777 != SEALED_COPY_MODE {
                nix::sys::stat::fchmod(self.fd.as_fd(), Mode::from_bits_truncate(SEALED_COPY_MODE))?;
            }
        }
        Ok(self.fd.as_raw_fd())
    }
}

fn same_file(a: &FileStat, b: &FileStat) -> bool {
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

/// Backslashes and colons are separators in overlayfs's `lowerdir`.
fn escape_layer(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "\\\\").replace(':', "\\:")
}

fn read_only_overlay(path: &Path) -> io::Result<OwnedFd> {
    let running = fstat(File::open(path)?.as_fd())?;
    let real = std::fs::canonicalize(path)?;
    // The file at the path must still be the binary that runs (not a newer build put in its place).
    if !same_file(&nix::sys::stat::stat(&real)?, &running) {
        return Err(io::Error::other(format!("{} was replaced since this process started", real.display())));
    }
    let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file in a directory", real.display())));
    };
    std::fs::create_dir_all(EMPTY_LAYER)?;
    let context = FsContext::open("overlay")?;
    // The binary's directory on top, so that nothing in the empty layer can shadow it.
    context.set("lowerdir", &format!("{}:{}", escape_layer(dir), escape_layer(Path::new(EMPTY_LAYER))))?;
    // Inode numbers as they are (we compare them below); also keeps dmesg quiet on mixed filesystems.
    let _ = context.set("xino", "off");
    let overlay = context.mount(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID)?;
    let fd = openat(overlay.as_fd(), name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
    let seen = fstat(fd.as_fd())?;
    if seen.st_ino != running.st_ino || seen.st_size != running.st_size {
        return Err(io::Error::other(format!("the overlay shows another file than {}", real.display())));
    }
    // `fd` keeps the detached overlay mounted; the mount's own descriptor can go.
    Ok(fd)
}

fn sealed_copy(path: &Path) -> io::Result<OwnedFd> {
    let mut source = File::open(path)?;
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"myshim-helper".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a descriptor nobody else owns.
    let mut copy = unsafe { File::from_raw_fd(fd) };
    io::copy(&mut source, &mut copy)?;
    nix::sys::stat::fchmod(copy.as_fd(), Mode::from_bits_truncate(SEALED_COPY_MODE))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(copy))
}

/// Refuses to let the binary act on its command line when it was started the way only a container
/// can start it: as the interpreter of a script (`#!/proc/self/exe …`), or through another process's
/// `/proc/<pid>/exe` (a protected copy that is no file of the caller's filesystem). containerd, the
/// runc shim, Docker and Podman run the binary by its path; then the path the kernel recorded for
/// the exec and the path of the running executable both name the file that runs.
///
/// Call it first thing in `main`, after the helper check, before reading any input: such a run must
/// not read its standard input or a configuration its environment names.
pub fn check_invocation() -> std::result::Result<(), String> {
    let running = nix::sys::stat::stat("/proc/self/exe").map_err(|e| format!("stat /proc/self/exe: {e}"))?;
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("read /proc/self/exe: {e}"))?;
    let reachable = nix::sys::stat::stat(&exe).is_ok_and(|s| same_file(&s, &running));
    if !reachable {
        return Err(format!("refusing to run: the executable {} is not a file of this filesystem (started through another process's /proc/<pid>/exe?)", exe.display()));
    }
    // What the caller passed to execve: the script, when the kernel runs us as its interpreter.
    // SAFETY: getauxval only reads the auxiliary vector.
    let execfn = unsafe { libc::getauxval(libc::AT_EXECFN) } as *const libc::c_char;
    if execfn.is_null() {
        return Ok(());
    }
    // SAFETY: AT_EXECFN points to the NUL-terminated path the kernel placed on our stack at exec.
    let executed = Path::new(std::ffi::OsStr::from_bytes(unsafe { CStr::from_ptr(execfn) }.to_bytes())).to_owned();
    match nix::sys::stat::stat(&executed) {
        Ok(s) if same_file(&s, &running) => Ok(()),
        _ => Err(format!("refusing to run: started as the interpreter of {} (a #! script)", executed.display())),
    }
}

/// Runs the executable `fd` with `args` (`execveat`), for tests: the exit code.
#[cfg(test)]
fn run_descriptor(fd: RawFd, args: &[&str]) -> i32 {
    let c_args: Vec<CString> = args.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: fork in a test process; the child only calls execveat and _exit.
    match unsafe { libc::fork() } {
        0 => unsafe {
            libc::syscall(libc::SYS_execveat, fd, c"".as_ptr(), argv.as_ptr(), envp.as_ptr(), libc::AT_EMPTY_PATH);
            libc::_exit(127)
        },
        pid => {
            let mut status = 0;
            // SAFETY: waits for the child forked above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            libc::WEXITSTATUS(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    /// One check at a time: a descriptor one check opens for writing is inherited by a child the other
    /// forks meanwhile, and keeps the first check's exec failing with ETXTBSY until that child execs.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Writing the executable through its descriptor (where `/proc/<pid>/exe` of a process running it
    /// leads) fails with `expected`, at open or at write; a process can still run it.
    fn check(executable: &HelperExecutable, expected: i32) {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let fd = executable.raw_fd().unwrap();
        let through_proc = format!("/proc/self/fd/{fd}");
        let error = match OpenOptions::new().write(true).open(&through_proc) {
            Ok(mut file) => file.write_all(b"overwritten").expect_err("wrote into the helper binary"),
            Err(e) => e,
        };
        assert_eq!(error.raw_os_error(), Some(expected), "{error}");
        assert_eq!(run_descriptor(fd, &["true"]), 0);
    }

    #[test]
    fn a_read_only_overlay_refuses_writes_and_mode_changes() {
        let executable = HelperExecutable::open(Path::new("/bin/true")).unwrap();
        assert_eq!(executable.protection(), Protection::ReadOnlyOverlay);
        check(&executable, libc::EROFS);
        let through_proc = format!("/proc/self/fd/{}", executable.raw_fd().unwrap());
        let chmod = nix::sys::stat::fchmodat(nix::fcntl::AT_FDCWD, through_proc.as_str(), Mode::from_bits_truncate(0o4755), nix::sys::stat::FchmodatFlags::FollowSymlink);
        assert_eq!(chmod, Err(nix::errno::Errno::EROFS));
    }

    /// The attack a read-only bind mount fell to: a process in a user and mount namespace of its own
    /// clears the read-only flag of the detached mount with `mount_setattr`, then writes. On the
    /// overlay the flag may go, the file stays read-only.
    #[test]
    fn clearing_the_read_only_flag_in_a_user_namespace_gains_nothing() {
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let executable = HelperExecutable::open(Path::new("/bin/true")).unwrap();
        let fd = executable.raw_fd().unwrap();
        let path = CString::new(format!("/proc/self/fd/{fd}")).unwrap();
        let clear = crate::mount_api::MountAttr { attr_clr: MOUNT_ATTR_RDONLY, ..Default::default() };
        // SAFETY: fork in a test process; the child makes system calls only (everything it needs was
        // prepared above) and exits with a code that says how far the attack got (0: it wrote).
        match unsafe { libc::fork() } {
            0 => unsafe {
                // Root of a new user namespace that maps root to the host's root (so file permissions
                // are no obstacle), with a mount namespace of its own.
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                    libc::_exit(10);
                }
                let map = libc::open(c"/proc/self/uid_map".as_ptr(), libc::O_WRONLY);
                if map < 0 || libc::write(map, c"0 0 1".as_ptr().cast(), 5) != 5 {
                    libc::_exit(11);
                }
                let cleared = libc::syscall(libc::SYS_mount_setattr, fd, c"".as_ptr(), libc::AT_EMPTY_PATH, &clear as *const crate::mount_api::MountAttr, std::mem::size_of_val(&clear)) == 0;
                let writable = libc::open(path.as_ptr(), libc::O_WRONLY);
                let chmod = libc::chmod(path.as_ptr(), 0o4755);
                libc::_exit(match (cleared, writable >= 0, chmod == 0) {
                    (_, true, _) => 0,
                    (_, _, true) => 1,
                    (true, false, false) => 2,
                    (false, false, false) => 3,
                })
            },
            pid => {
                let mut status = 0;
                // SAFETY: waits for the child forked above.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                let code = libc::WEXITSTATUS(status);
                assert!(code == 2 || code == 3, "the attack got through or could not be tried (code {code})");
            }
        }
    }

    #[test]
    fn a_sealed_copy_refuses_writes_and_gets_its_mode_back() {
        let executable = HelperExecutable::sealed_copy(Path::new("/bin/true")).unwrap();
        check(&executable, libc::EPERM);
        let fd = executable.raw_fd().unwrap();
        nix::sys::stat::fchmod(executable.fd.as_fd(), Mode::empty()).unwrap();
        assert_eq!(fd, executable.raw_fd().unwrap());
        assert_eq!(fstat(executable.fd.as_fd()).unwrap().st_mode & 0o7777, SEALED_COPY_MODE);
    }

    #[test]
    fn layer_paths_are_escaped() {
        assert_eq!(escape_layer(Path::new("/a:b\\c")), "/a\\:b\\\\c");
    }
}
