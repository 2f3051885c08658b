//! Publishes task events to containerd in the order the core emitted them: one queue, the head
//! retried with backoff (containerd may be restarting) and never reordered or dropped.

use std::time::Duration;

use myshim_protos::containerd::services::events::ttrpc::v1::ForwardRequest;
use prost::Message;
use tracing::{debug, warn};
use ttrpc::proto::RequestInit;

use crate::api::events::envelope;
use crate::core::events::EventReceiver;

const FORWARD_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Forwards events to containerd's ttrpc socket until the sending side closes.
pub async fn run(mut events: EventReceiver, namespace: String, ttrpc_address: String) {
    let mut client: Option<ttrpc::r#async::Client> = None;
    while let Some((event, at)) = events.next().await {
        let envelope = envelope(&event, &namespace, at);
        let payload = ForwardRequest { envelope: Some(envelope.clone()) }.encode_to_vec();
        let mut backoff = Duration::from_millis(50);
        loop {
            match forward(&mut client, &ttrpc_address, payload.clone()).await {
                Ok(()) => {
                    debug!(topic = %envelope.topic, "event forwarded");
                    events.delivered();
                    break;
                }
                Err(e) => {
                    warn!(topic = %envelope.topic, error = %e, "forwarding event failed; retrying");
                    client = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

async fn forward(client: &mut Option<ttrpc::r#async::Client>, address: &str, payload: Vec<u8>) -> Result<(), String> {
    if client.is_none() {
        let connected = ttrpc::r#async::Client::connect(&format!("unix://{address}")).await.map_err(|e| format!("connect {address}: {e}"))?;
        *client = Some(connected);
    }
    let mut request = ttrpc::Request::init_request(FORWARD_SERVICE.into(), "Forward".into(), FORWARD_TIMEOUT.as_nanos() as i64, vec![]);
    request.set_payload(payload);
    let response = client.as_ref().expect("connected above").request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    if status.code() != ttrpc::Code::OK {
        return Err(format!("containerd refused the event: {}", status.message()));
    }
    Ok(())
}
