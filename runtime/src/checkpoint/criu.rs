//! Talking to CRIU the way runc does: `criu swrk 3` started with one end of a `SOCK_SEQPACKET` socket
//! pair at descriptor 3, one protobuf `criu_req` per packet, answered by `criu_resp`s. While it works,
//! CRIU stops at named points ("notify scripts": `setup-namespaces`, `post-restore`,
//! `orphan-pts-master`, …) and waits for our answer; a terminal's new master comes along with its
//! notification as an `SCM_RIGHTS` descriptor.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use myshim_protos::{CriuNotify, CriuReq, CriuReqType, CriuResp, CriuVersion};
use nix::sys::socket::{recvmsg, send, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType};
use prost::Message;

use crate::error::{Context, Error, Result};
use crate::hooks::ChildWaiter;

/// The oldest CRIU the runtime drives: 3.14 is the first with the cgroup v2 freezer, and the options
/// used here (orphan pts master, cgroup roots, external namespaces) are older.
const OLDEST: (i32, i32) = (3, 14);
/// How long CRIU may take to exit once it answered.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest packet CRIU sends (responses are small; notifications smaller still).
const PACKET_SIZE: usize = 64 * 1024;

/// CRIU's version: major, minor, sublevel.
pub type Version = (i32, i32, i32);

/// The CRIU binary to run.
#[derive(Debug, Clone)]
pub struct Criu {
    path: PathBuf,
}

impl Criu {
    /// `configured` when given (it must exist), else `criu` on `PATH`.
    pub fn locate(configured: Option<&Path>) -> Result<Criu> {
        if let Some(path) = configured {
            return match std::fs::metadata(path) {
                Ok(m) if m.is_file() => Ok(Criu { path: path.to_owned() }),
                Ok(_) => Err(Error::CriuUnavailable(format!("criu at {} is not a file", path.display()))),
                Err(e) => Err(Error::CriuUnavailable(format!("criu at {}: {}", path.display(), crate::error::lower(&e)))),
            };
        }
        let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        std::env::split_paths(&search)
            .map(|dir| dir.join("criu"))
            .find(|candidate| candidate.is_file())
            .map(|path| Criu { path })
            .ok_or_else(|| Error::CriuUnavailable("criu is not installed (not found on PATH; set criu_path, or install CRIU)".into()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// CRIU's version (major, minor, sublevel), refusing one older than the runtime drives. Asked once
    /// per binary (a replaced binary is asked again): a long-lived caller saves a CRIU run per use.
    pub fn version(&self, waiter: &dyn ChildWaiter) -> Result<Version> {
        use std::os::unix::fs::MetadataExt;
        /// A binary by path, device, inode and modification time, with its version.
        type Known = ((PathBuf, u64, u64, i64), Version);
        static KNOWN: std::sync::Mutex<Vec<Known>> = std::sync::Mutex::new(Vec::new());
        let identity = std::fs::metadata(&self.path).ok().map(|m| (self.path.clone(), m.dev(), m.ino(), m.mtime()));
        if let Some(identity) = &identity {
            let known = KNOWN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((_, version)) = known.iter().find(|(id, _)| id == identity) {
                return Ok(*version);
            }
        }
        let version = self.ask_version(waiter)?;
        if let Some(identity) = identity {
            KNOWN.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((identity, version));
        }
        Ok(version)
    }

    fn ask_version(&self, waiter: &dyn ChildWaiter) -> Result<Version> {
        let request = CriuReq { r#type: CriuReqType::Version as i32, ..Default::default() };
        let response = self.call(waiter, request, &[], &mut |_, _| Ok(()), &mut |_, _| Ok(()))?;
        let CriuVersion { major_number, minor_number, sublevel, .. } =
            response.version.ok_or_else(|| self.broken("its version answer carries no version"))?;
        let version = (major_number, minor_number, sublevel.unwrap_or(0));
        if (version.0, version.1) < OLDEST {
            return Err(Error::CriuUnavailable(format!("criu {}.{} at {} is too old (at least {}.{} is needed)", version.0, version.1, self.path.display(), OLDEST.0, OLDEST.1)));
        }
        Ok(version)
    }

    fn broken(&self, what: &str) -> Error {
        Error::CriuUnavailable(format!("criu at {}: {what}", self.path.display()))
    }

    /// Starts a `criu swrk` with `fds` placed at the numbers given (what the request's descriptor
    /// fields and inherit-fd keys refer to), lets `on_spawn` see its pid and complete the request
    /// (a restore puts CRIU into the new cgroup first), sends the request, answers CRIU's
    /// notifications with `on_notify` (an error there makes CRIU abort), and returns the final
    /// response, whether it reports success or not.
    pub fn call(
        &self,
        waiter: &dyn ChildWaiter,
        mut request: CriuReq,
        fds: &[(&OwnedFd, RawFd)],
        on_spawn: &mut dyn FnMut(u32, &mut CriuReq) -> Result<()>,
        on_notify: &mut dyn FnMut(&CriuNotify, Vec<OwnedFd>) -> Result<()>,
    ) -> Result<CriuResp> {
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .context(|| "create the socket to criu".into())?;
        let null = std::fs::File::options().read(true).write(true).open("/dev/null").context(|| "open /dev/null".into())?;
        let null = OwnedFd::from(null);
        let mut placed = vec![(&null, 0), (&null, 1), (&null, 2), (&theirs, 3)];
        placed.extend_from_slice(fds);
        let args = ["criu".to_owned(), "swrk".to_owned(), "3".to_owned()];
        // CRIU runs iptables-restore and friends from PATH: it gets our environment.
        let pid = crate::process::spawn::spawn(&self.path, &args, &crate::hooks::own_environment(), &placed)
            .map_err(|e| Error::CriuUnavailable(format!("start criu at {}: {}", self.path.display(), crate::error::lower(&e))))?;
        let mut exit = waiter.watch(pid);
        drop(theirs);

        // Outer: what on_spawn made of it; inner: the conversation.
        let result = on_spawn(pid, &mut request).map(|()| converse(&ours, &request, on_notify));
        // Closing our end ends a CRIU that still waits for us (after an error of ours).
        drop(ours);
        let status = match exit.wait(EXIT_TIMEOUT) {
            Some(status) => Some(status),
            None => {
                let _ = crate::sys::send_signal(pid, libc::SIGKILL as u32);
                exit.wait(EXIT_TIMEOUT)
            }
        };
        // A CRIU that broke off the conversation (a binary that is not CRIU, a crash) is a CRIU that
        // does not work, named as such.
        result?.map_err(|e| match e {
            Error::Io { context, source } => {
                let how = status.map_or("did not exit".to_owned(), |s| format!("exited with status {s}"));
                Error::CriuUnavailable(format!("criu at {} {how} without answering ({context}: {})", self.path.display(), crate::error::lower(&source)))
            }
            other => other,
        })
    }
}

/// The request/notification exchange on CRIU's socket.
fn converse(socket: &OwnedFd, request: &CriuReq, on_notify: &mut dyn FnMut(&CriuNotify, Vec<OwnedFd>) -> Result<()>) -> Result<CriuResp> {
    send(socket.as_raw_fd(), &request.encode_to_vec(), MsgFlags::empty()).context(|| "send the request to criu".into())?;
    loop {
        let (response, fds) = receive(socket)?;
        if response.r#type != CriuReqType::Notify as i32 {
            return Ok(response);
        }
        let notify = response.notify.unwrap_or_default();
        let outcome = on_notify(&notify, fds);
        let answer = CriuReq { r#type: CriuReqType::Notify as i32, notify_success: Some(outcome.is_ok()), ..Default::default() };
        send(socket.as_raw_fd(), &answer.encode_to_vec(), MsgFlags::empty()).context(|| "answer criu's notification".into())?;
        // CRIU aborts on a failed notification; its final answer follows, but ours is the cause.
        if let Err(e) = outcome {
            let _ = receive(socket);
            return Err(e);
        }
    }
}

/// One packet from CRIU, with the descriptors that came along.
fn receive(socket: &OwnedFd) -> Result<(CriuResp, Vec<OwnedFd>)> {
    let mut buffer = vec![0u8; PACKET_SIZE];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (length, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        match recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(message) => {
                let mut fds = Vec::new();
                for cmsg in message.cmsgs().context(|| "read criu's descriptors".into())? {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        // SAFETY: SCM_RIGHTS just installed these descriptors in this process; each
                        // is owned once, here.
                        fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
                break (message.bytes, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("read criu's answer", e)),
        }
    };
    if length == 0 {
        return Err(Error::io("read criu's answer", std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
    }
    let response = CriuResp::decode(&buffer[..length]).map_err(|e| Error::io("decode criu's answer", std::io::Error::other(e)))?;
    Ok((response, fds))
}
