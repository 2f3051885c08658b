//! Publishes task events to containerd in the order the core emitted them: one queue, the head
//! retried with backoff (containerd may be restarting) and never reordered or dropped.
//!
//! Events go to containerd's ttrpc `Events/Forward` at `TTRPC_ADDRESS` whatever protocol the task
//! API uses; without that address, to the gRPC `Events/Forward` at `-address`.

use std::path::PathBuf;
use std::time::Duration;

use myshim_protos::containerd::services::events::v1::events_client::EventsClient;
use myshim_protos::containerd::services::events::{ttrpc::v1::ForwardRequest as TtrpcForward, v1::ForwardRequest as GrpcForward};
use myshim_protos::containerd::types::Envelope;
use prost::Message;
use tonic::transport::Channel;
use tracing::{debug, warn};
use ttrpc::proto::RequestInit;

use crate::api::events::envelope;
use crate::containerd_channel;
use crate::core::events::EventReceiver;

const TTRPC_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where events go.
pub enum Forwarder {
    Ttrpc { address: String, client: Option<ttrpc::r#async::Client> },
    Grpc { address: PathBuf, client: Option<EventsClient<Channel>> },
}

impl Forwarder {
    /// containerd's ttrpc socket from `TTRPC_ADDRESS`, else its gRPC socket.
    pub fn from_environment(grpc_address: &str) -> Forwarder {
        match std::env::var("TTRPC_ADDRESS") {
            Ok(address) if !address.is_empty() => Forwarder::Ttrpc { address, client: None },
            _ => Forwarder::Grpc { address: PathBuf::from(grpc_address), client: None },
        }
    }

    async fn forward(&mut self, envelope: &Envelope) -> Result<(), String> {
        match self {
            Forwarder::Ttrpc { address, client } => {
                if client.is_none() {
                    let connected = ttrpc::r#async::Client::connect(&format!("unix://{address}")).await.map_err(|e| format!("connect {address}: {e}"))?;
                    *client = Some(connected);
                }
                let mut request = ttrpc::Request::init_request(TTRPC_SERVICE.into(), "Forward".into(), FORWARD_TIMEOUT.as_nanos() as i64, vec![]);
                request.set_payload(TtrpcForward { envelope: Some(envelope.clone()) }.encode_to_vec());
                let response = client.as_ref().expect("connected above").request(request).await.map_err(|e| e.to_string())?;
                let status = response.status();
                if status.code() != ttrpc::Code::OK {
                    return Err(format!("containerd refused the event: {}", status.message()));
                }
                Ok(())
            }
            Forwarder::Grpc { address, client } => {
                if client.is_none() {
                    let channel = containerd_channel::connect(address, Some(FORWARD_TIMEOUT)).await?;
                    *client = Some(EventsClient::new(channel));
                }
                let request = GrpcForward { envelope: Some(envelope.clone()) };
                client.as_mut().expect("connected above").forward(request).await.map(drop).map_err(|e| e.message().to_owned())
            }
        }
    }

    fn disconnect(&mut self) {
        match self {
            Forwarder::Ttrpc { client, .. } => *client = None,
            Forwarder::Grpc { client, .. } => *client = None,
        }
    }
}

/// Forwards events until the sending side closes.
pub async fn run(mut events: EventReceiver, namespace: String, mut forwarder: Forwarder) {
    while let Some((event, at)) = events.next().await {
        let envelope = envelope(&event, &namespace, at);
        let mut backoff = Duration::from_millis(50);
        loop {
            match forwarder.forward(&envelope).await {
                Ok(()) => {
                    debug!(topic = %envelope.topic, "event forwarded");
                    events.delivered();
                    break;
                }
                Err(e) => {
                    warn!(topic = %envelope.topic, error = %e, "forwarding event failed; retrying");
                    forwarder.disconnect();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
