//! The control channel between the runtime and a helper process: a unix stream socket pair carrying
//! length-prefixed JSON messages (and, where needed, descriptors as `SCM_RIGHTS`).

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Largest message accepted: a spec with a very large environment still fits.
const MAX_MESSAGE: usize = 16 << 20;

/// What a helper tells the runtime.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Report {
    /// The host pid of the process that becomes the container's (or exec's) process, when the helper
    /// had to fork to enter a pid namespace.
    Pid(u32),
    /// Set up and waiting to be started.
    Ready,
    /// The terminal's master follows as a descriptor with this message.
    Console,
    /// The helper created a user namespace: the runtime must write its uid and gid maps, then send
    /// [`Directive::Continue`].
    MapIds,
    /// The init's mounts are made and it waits, before pivot_root, for the runtime's createRuntime
    /// hooks; [`Directive::Continue`] brings the state its own hooks get.
    HookPoint,
    /// Something runc would only warn about (the runtime logs it); setup goes on.
    Warning(String),
    /// The seccomp filter's notification descriptor follows: the runtime hands it to the profile's
    /// listener, then sends [`Directive::Continue`].
    SeccompNotify,
    /// Setup or exec failed; the text says why.
    Failed(String),
}

/// What the runtime tells a helper.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Directive {
    /// First, before the plan: join the container's v1 cgroups, whose `tasks` files come as descriptors.
    JoinCgroup,
    /// Go on; for the init at its hook point, with the OCI state (JSON) its hooks read.
    Continue { hook_state: Option<String> },
}

pub(crate) struct Channel {
    socket: UnixStream,
}

impl Channel {
    /// A connected pair: (runtime end, helper end). Both are close-on-exec.
    pub(crate) fn pair() -> io::Result<(Channel, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        Ok((Channel { socket: ours }, theirs))
    }

    pub(crate) fn from_stream(socket: UnixStream) -> Channel {
        Channel { socket }
    }

    /// Continues on another socket to the same peer (the old one is closed).
    pub(crate) fn replace_socket(&mut self, socket: UnixStream) {
        self.socket = socket;
    }

    pub(crate) fn send<T: Serialize>(&mut self, message: &T) -> io::Result<()> {
        self.send_with_fds(message, &[])
    }

    /// Sends a message, passing `fds` along with its first byte.
    pub(crate) fn send_with_fds<T: Serialize>(&mut self, message: &T, fds: &[RawFd]) -> io::Result<()> {
        let body = serde_json::to_vec(message).map_err(io::Error::other)?;
        // Header and body in one write, so a message never interleaves with another writer's.
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        let mut sent = 0;
        if !fds.is_empty() {
            let cmsg = [ControlMessage::ScmRights(fds)];
            sent = sendmsg::<()>(self.socket.as_raw_fd(), &[IoSlice::new(&frame)], &cmsg, MsgFlags::empty(), None)?;
        }
        // write(2), not send(2) (what the standard library uses for sockets): the init reports ready
        // after its seccomp filter is loaded, and a profile that lets a program write need not allow
        // sendto.
        let mut rest = &frame[sent..];
        while !rest.is_empty() {
            match nix::unistd::write(&self.socket, rest) {
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Receives one message; `Ok(None)` when the other end closed the channel. Descriptors that came
    /// with it are returned in order.
    pub(crate) fn receive<T: DeserializeOwned>(&mut self, timeout: Option<Duration>) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.wait_readable(deadline)?;
        let mut header = [0u8; 4];
        let mut space = nix::cmsg_space!([RawFd; 16]);
        let (read, fds) = {
            let mut iov = [IoSliceMut::new(&mut header)];
            let msg = recvmsg::<()>(self.socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
            let mut fds = Vec::new();
            // nix reports a truncated control message (descriptors the kernel could not hand over:
            // more than fit, or over the descriptor limit) as ENOBUFS; say what it means.
            let cmsgs = msg.cmsgs().map_err(|_| io::Error::other("descriptors sent along were lost (more than fit in the control message, or over the descriptor limit)"))?;
            for cmsg in cmsgs {
                if let ControlMessageOwned::ScmRights(received) = cmsg {
                    // SAFETY: the kernel just installed these descriptors in our table; nobody else owns them.
                    fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
            (msg.bytes, fds)
        };
        if read == 0 {
            return Ok(None);
        }
        if read < header.len() {
            self.wait_readable(deadline)?;
            self.socket.read_exact(&mut header[read..])?;
        }
        let len = u32::from_le_bytes(header) as usize;
        if len > MAX_MESSAGE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("control message of {len} bytes")));
        }
        let mut body = vec![0u8; len];
        self.wait_readable(deadline)?;
        self.socket.read_exact(&mut body)?;
        let message = serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some((message, fds)))
    }

    fn wait_readable(&self, deadline: Option<Instant>) -> io::Result<()> {
        let Some(deadline) = deadline else { return Ok(()) };
        if crate::sys::wait_readable(self.socket.as_fd(), deadline)? {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::TimedOut, "no answer from the container's init"))
        }
    }
}
