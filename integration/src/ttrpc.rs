//! ttrpc by hand: a blocking client that can also send malformed frames, and the framing both it and
//! the fake containerd's event endpoint use. Messages are the `ttrpc` package of `proto/`.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use myshim_protos::ttrpc::{Request, Response};
use prost::Message;

pub const MESSAGE_REQUEST: u8 = 1;
pub const MESSAGE_RESPONSE: u8 = 2;
const HEADER_LENGTH: usize = 10;
/// The largest payload a peer accepts (ttrpc's limit).
pub const MAX_PAYLOAD: usize = 4 << 20;

/// One frame's header.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub length: u32,
    pub stream: u32,
    pub kind: u8,
    pub flags: u8,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LENGTH] {
        let mut bytes = [0u8; HEADER_LENGTH];
        bytes[..4].copy_from_slice(&self.length.to_be_bytes());
        bytes[4..8].copy_from_slice(&self.stream.to_be_bytes());
        bytes[8] = self.kind;
        bytes[9] = self.flags;
        bytes
    }

    fn decode(bytes: &[u8; HEADER_LENGTH]) -> Header {
        Header {
            length: u32::from_be_bytes(bytes[..4].try_into().unwrap()),
            stream: u32::from_be_bytes(bytes[4..8].try_into().unwrap()),
            kind: bytes[8],
            flags: bytes[9],
        }
    }
}

/// Reads one frame; refuses payloads over [`MAX_PAYLOAD`].
pub fn read_frame(stream: &mut impl Read) -> io::Result<(Header, Vec<u8>)> {
    let mut header = [0u8; HEADER_LENGTH];
    stream.read_exact(&mut header)?;
    let header = Header::decode(&header);
    if header.length as usize > MAX_PAYLOAD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {} bytes", header.length)));
    }
    let mut payload = vec![0u8; header.length as usize];
    stream.read_exact(&mut payload)?;
    Ok((header, payload))
}

pub fn write_frame(stream: &mut impl Write, stream_id: u32, kind: u8, payload: &[u8]) -> io::Result<()> {
    let header = Header { length: payload.len() as u32, stream: stream_id, kind, flags: 0 };
    let mut frame = header.encode().to_vec();
    frame.extend_from_slice(payload);
    stream.write_all(&frame)
}

/// An error status (gRPC code numbers, which ttrpc shares) or a broken connection.
#[derive(Debug)]
pub struct CallError {
    pub code: i32,
    pub message: String,
}

impl CallError {
    fn io(e: io::Error) -> CallError {
        CallError { code: -1, message: format!("connection: {e}") }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}: {}", self.code, self.message)
    }
}

pub struct TtrpcClient {
    stream: UnixStream,
    next_stream: u32,
}

impl TtrpcClient {
    pub fn connect(socket: &Path) -> io::Result<TtrpcClient> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(TtrpcClient { stream, next_stream: 1 })
    }

    /// Calls `service/method` with `request` and decodes the answer.
    pub fn call<Req: Message, Resp: Message + Default>(&mut self, service: &str, method: &str, request: &Req) -> Result<Resp, CallError> {
        let envelope = Request { service: service.into(), method: method.into(), payload: request.encode_to_vec(), timeout_nano: 0, metadata: vec![] };
        let response = self.round_trip(&envelope.encode_to_vec())?;
        match response.status {
            Some(status) if status.code != 0 => Err(CallError { code: status.code, message: status.message }),
            _ => Resp::decode(response.payload.as_slice()).map_err(|e| CallError { code: -1, message: format!("undecodable answer: {e}") }),
        }
    }

    /// Sends `payload` as one request frame (whatever it holds) and reads the answer.
    pub fn round_trip(&mut self, payload: &[u8]) -> Result<Response, CallError> {
        let stream_id = self.next_stream;
        self.next_stream += 2;
        write_frame(&mut self.stream, stream_id, MESSAGE_REQUEST, payload).map_err(CallError::io)?;
        loop {
            let (header, body) = read_frame(&mut self.stream).map_err(CallError::io)?;
            if header.stream == stream_id && header.kind == MESSAGE_RESPONSE {
                return Response::decode(body.as_slice()).map_err(|e| CallError { code: -1, message: format!("undecodable response: {e}") });
            }
        }
    }

    /// Writes raw bytes (a malformed frame, or garbage).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }
}
