//! A gRPC channel to containerd's own socket (a unix path), for the calls the shim makes to it: the
//! Version query at `start`, events without a ttrpc address, and the keepalive `Wait`s.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to containerd at `socket`; `timeout` bounds the connection and every call on it (none
/// for calls that stay open, like `Wait`).
pub async fn connect(socket: &Path, timeout: Option<Duration>) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_static("http://containerd");
    if let Some(timeout) = timeout {
        endpoint = endpoint.connect_timeout(timeout).timeout(timeout);
    }
    let path = socket.to_owned();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| format!("connect {}: {e}", socket.display()))
}
