//! Publishing with QoS 1 and knowing when the broker has it: rumqttc reports the packet id a
//! publish went out with (`Outgoing::Publish`) and its PUBACK, but does not tie them to the
//! call that made it. One publish is in flight at a time, so the next `Outgoing::Publish`
//! after a call is that call's, and its PUBACK settles it; after a connection error the client
//! is made anew, so nothing queued before is published later under another call's name.
//! Alarm pushes are few; an exact answer per message matters more than throughput here.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

type Answer = oneshot::Sender<Result<(), String>>;
type Job = (String, Vec<u8>, Answer);

/// Publishes to one broker; cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    jobs: mpsc::Sender<Job>,
}

impl Publisher {
    /// Connects (and reconnects) with `options` until `shutdown`. The session is clean: what
    /// the broker has not acknowledged is published again by the caller, not by rumqttc.
    pub fn start(mut options: MqttOptions, shutdown: CancellationToken) -> Self {
        options.set_clean_session(true);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(run(options, rx, shutdown));
        Self { jobs: tx }
    }

    /// Publishes `payload` to `topic` with QoS 1; `Ok` once the broker has acknowledged it.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((topic.to_string(), payload, tx))
            .await
            .map_err(|_| "publisher stopped".to_string())?;
        rx.await.map_err(|_| "publisher stopped".to_string())?
    }
}

async fn run(options: MqttOptions, mut jobs: mpsc::Receiver<Job>, shutdown: CancellationToken) {
    let broker = format!(
        "{}:{}",
        options.broker_address().0,
        options.broker_address().1
    );
    let (mut client, mut eventloop) = AsyncClient::new(options.clone(), 16);
    // The job in flight: its answer, and its packet id once it is out.
    let mut current: Option<(Answer, Option<u16>)> = None;
    let mut down = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            job = jobs.recv(), if current.is_none() => {
                let Some((topic, payload, answer)) = job else { break };
                // Its caller gave up waiting (a timeout) and will ask again: not sent twice.
                if answer.is_closed() {
                    continue;
                }
                match client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                    Ok(()) => current = Some((answer, None)),
                    Err(e) => {
                        let _ = answer.send(Err(format!("cannot publish: {e}")));
                    }
                }
            }
            event = eventloop.poll() => match event {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    if let Some((_, id @ None)) = current.as_mut() {
                        *id = Some(pkid);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if current.as_ref().is_some_and(|(_, id)| *id == Some(ack.pkid)) {
                        if let Some((answer, _)) = current.take() {
                            let _ = answer.send(Ok(()));
                        }
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => down = false,
                Ok(_) => {}
                Err(e) => {
                    if !down {
                        warn!(%broker, error = %e, "alarm MQTT publisher: connection lost");
                        down = true;
                    }
                    if let Some((answer, _)) = current.take() {
                        let _ = answer.send(Err(format!("MQTT {broker}: {e}")));
                    }
                    // A fresh client: nothing of the failed attempt is sent later under
                    // another call's name.
                    (client, eventloop) = AsyncClient::new(options.clone(), 16);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
    let _ = client.try_disconnect();
}
