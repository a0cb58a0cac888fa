//! Changes other replicas made, heard through LISTEN on a connection of its own. When that
//! connection drops, it reconnects with backoff and then says `Resync`: notifications
//! sent meanwhile are lost.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreChange;

/// The notification channel every write of tokens and documents notifies.
pub(super) const CHANNEL: &str = "diglot_changes";

/// What a notification says of `change`.
pub(super) fn payload(change: &StoreChange) -> String {
    match change {
        StoreChange::Tokens => "tokens".into(),
        StoreChange::Documents { kind } => format!("documents:{kind}"),
        StoreChange::Resync => "resync".into(),
    }
}

fn parse(payload: &str) -> Option<StoreChange> {
    match payload.split_once(':') {
        None if payload == "tokens" => Some(StoreChange::Tokens),
        None if payload == "resync" => Some(StoreChange::Resync),
        Some(("documents", kind)) => Some(StoreChange::Documents { kind: kind.to_owned() }),
        _ => None,
    }
}

/// Connects and listens; the future it gives ends when the connection is lost.
async fn listen(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    sender: broadcast::Sender<StoreChange>,
) -> Result<impl Future<Output = ()> + Send + use<>, tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    // The connection is driven here: its messages are the notifications.
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if let Some(change) = parse(notification.payload()) {
                        // No receiver is no error: nobody needs to know yet.
                        let _ = sender.send(change);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "store: lost the connection listening for other replicas' changes");
                    break;
                }
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(async move {
        let _ = driver.await;
        drop(client);
    })
}

/// Listens from now on (an error when the first connection fails), reconnecting for good
/// in a task of its own: abort it to stop.
pub(super) async fn start(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    sender: broadcast::Sender<StoreChange>,
) -> Result<tokio::task::JoinHandle<()>, tokio_postgres::Error> {
    let mut connected = listen(&config, &tls, sender.clone()).await?;
    Ok(tokio::spawn(async move {
        loop {
            connected.await;
            let mut delay = Duration::from_millis(100);
            connected = loop {
                tokio::time::sleep(delay).await;
                match listen(&config, &tls, sender.clone()).await {
                    Ok(next) => break next,
                    Err(e) => {
                        tracing::warn!(error = %e, "store: cannot listen for other replicas' changes yet");
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
            tracing::info!("store: listening for other replicas' changes again");
            let _ = sender.send(StoreChange::Resync);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_as_their_change() {
        for change in [
            StoreChange::Tokens,
            StoreChange::Resync,
            StoreChange::Documents { kind: "channel".into() },
            StoreChange::Documents { kind: "a:b".into() },
        ] {
            assert_eq!(parse(&payload(&change)), Some(change));
        }
        assert_eq!(parse("gopher"), None);
    }
}
