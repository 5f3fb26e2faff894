//! What a node tells its application, as [`Events`]: awaited one at a time with
//! [`Events::recv`], or consumed as a [`Stream`]. A reader that falls behind misses the oldest
//! events and is told how many ([`Lagged`]), the typed `LAGGED n` of the pipe.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::Event;

/// Why [`Events::recv`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// The subscriber fell behind and this many events were dropped for it.
    #[error("missed {0} events")]
    Lagged(u64),
    /// The node has stopped.
    #[error("the node has stopped")]
    Closed,
}

/// The reader fell more than `event_capacity` events behind, and this many were dropped for it
/// (the pipe's `LAGGED n`). The events after it follow in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("missed {0} events")]
pub struct Lagged(pub u64);

impl From<Lagged> for EventsError {
    fn from(lagged: Lagged) -> Self {
        EventsError::Lagged(lagged.0)
    }
}

/// A receive under way: it owns the receiver while it waits and hands it back with the result.
type Waiting = Pin<Box<dyn Future<Output = (Result<Event, RecvError>, Receiver<Event>)> + Send>>;

/// Events from a node, in order, from [`Node::events`](super::Node::events). A subscriber that
/// falls more than `event_capacity` behind misses the oldest ones and is told how many.
///
/// As a [`Stream`], items are `Ok(event)` or `Err(Lagged(n))`, and the stream ends when the
/// node stops:
///
/// ```
/// use tokio_stream::StreamExt;
/// use zgossip::{Config, Event, Node};
///
/// # #[tokio::main] async fn main() -> Result<(), zgossip::Error> {
/// let node = Node::spawn(Config::default())?;
/// let mut events = node.events().await?;
/// node.publish("tcp://10.0.0.2:6000", "orders").await?;
/// if let Some(Ok(Event::Deliver { key, value, .. })) = events.next().await {
///     assert_eq!((&*key, &*value), ("tcp://10.0.0.2:6000", "orders"));
/// }
/// node.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Events {
    /// Here unless a receive is waiting ([`Events::waiting`] has it then).
    receiver: Option<Receiver<Event>>,
    /// A receive that returned pending, and the waker it was last polled with. It is kept
    /// across calls, so a dropped `recv` (in a `select!`) loses nothing.
    waiting: Option<(Waiting, Waker)>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

impl Events {
    pub(super) fn new(receiver: Receiver<Event>) -> Self {
        Self {
            receiver: Some(receiver),
            waiting: None,
        }
    }

    /// The next event. Cancel-safe: an event that arrives while the future is dropped is kept
    /// for the next call.
    pub async fn recv(&mut self) -> Result<Event, EventsError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Result<Event, EventsError>> {
        if let Some((_, waker)) = &self.waiting {
            // Poll with the waker of whoever waits, so its wake-up still comes.
            let waker = waker.clone();
            return match self.poll_waiting(&mut Context::from_waker(&waker)) {
                Poll::Ready(result) => Some(result),
                Poll::Pending => None,
            };
        }
        let receiver = self.receiver.as_mut()?;
        match receiver.try_recv() {
            Ok(event) => Some(Ok(event)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Lagged(n)) => Some(Err(EventsError::Lagged(n))),
            Err(TryRecvError::Closed) => Some(Err(EventsError::Closed)),
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, EventsError>> {
        if self.waiting.is_some() {
            return self.poll_waiting(cx);
        }
        // What is already queued needs no allocation.
        if let Some(ready) = self.try_recv() {
            return Poll::Ready(ready);
        }
        let Some(mut receiver) = self.receiver.take() else {
            return Poll::Ready(Err(EventsError::Closed));
        };
        let receive = Box::pin(async move {
            let result = receiver.recv().await;
            (result, receiver)
        });
        self.waiting = Some((receive, cx.waker().clone()));
        self.poll_waiting(cx)
    }

    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<Result<Event, EventsError>> {
        let Some((receive, waker)) = &mut self.waiting else {
            return Poll::Ready(Err(EventsError::Closed));
        };
        let Poll::Ready((result, receiver)) = receive.as_mut().poll(cx) else {
            waker.clone_from(cx.waker());
            return Poll::Pending;
        };
        self.waiting = None;
        self.receiver = Some(receiver);
        Poll::Ready(result.map_err(|e| match e {
            RecvError::Lagged(n) => EventsError::Lagged(n),
            RecvError::Closed => EventsError::Closed,
        }))
    }
}

impl Stream for Events {
    type Item = Result<Event, Lagged>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx).map(|result| match result {
            Ok(event) => Some(Ok(event)),
            Err(EventsError::Lagged(n)) => Some(Err(Lagged(n))),
            Err(EventsError::Closed) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;
    use crate::{Config, Node};

    /// Generous: each step takes microseconds, but the machine may be busy.
    const WAIT: Duration = Duration::from_secs(10);

    fn delivered(key: &str) -> Event {
        Event::Deliver {
            key: key.into(),
            value: "svc".into(),
        }
    }

    /// The next item, failing the test if none comes.
    async fn next(events: &mut Events) -> Option<Result<Event, Lagged>> {
        tokio::time::timeout(WAIT, events.next())
            .await
            .expect("the stream went quiet")
    }

    #[tokio::test]
    async fn the_stream_yields_events_in_order_and_ends_when_the_node_stops() {
        let node = Node::spawn(Config::default()).unwrap();
        let mut events = node.events().await.unwrap();
        // A reader already waiting is woken by the first event.
        let reader = tokio::spawn(async move {
            let first = next(&mut events).await;
            (first, events)
        });
        node.publish("k1", "svc").await.unwrap();
        let (first, mut events) = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
        assert_eq!(first, Some(Ok(delivered("k1"))));
        node.publish("k2", "svc").await.unwrap();
        assert_eq!(next(&mut events).await, Some(Ok(delivered("k2"))));
        node.shutdown().await.unwrap();
        // Then the withdrawals of a graceful stop, and the end.
        while let Some(item) = next(&mut events).await {
            assert!(matches!(item, Ok(Event::Remove { .. })), "{item:?}");
        }
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_told_how_many_it_missed_then_goes_on() {
        let node = Node::spawn(Config {
            event_capacity: 4,
            ..Config::default()
        })
        .unwrap();
        let mut events = node.events().await.unwrap();
        for n in 0..10 {
            node.publish(&format!("k{n}"), "svc").await.unwrap();
        }
        // A round trip: the events of the publishes above have gone out.
        node.status().await.unwrap();
        let Some(Err(Lagged(missed))) = next(&mut events).await else {
            panic!("no lag reported");
        };
        let mut rest = Vec::new();
        while rest.len() as u64 + missed < 10 {
            rest.push(next(&mut events).await.unwrap().unwrap());
        }
        let expected: Vec<Event> = (missed..10).map(|n| delivered(&format!("k{n}"))).collect();
        assert_eq!(rest, expected);
        node.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_recv_dropped_while_waiting_loses_nothing() {
        let node = Node::spawn(Config::default()).unwrap();
        let mut events = node.events().await.unwrap();
        // As a `select!` in a loop does: the receive waits, then another branch wins.
        tokio::select! {
            biased;
            event = events.recv() => panic!("nothing was published yet: {event:?}"),
            () = tokio::task::yield_now() => {}
        }
        node.publish("k1", "svc").await.unwrap();
        node.publish("k2", "svc").await.unwrap();
        node.status().await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        let first = loop {
            if let Some(event) = events.try_recv() {
                break event;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "try_recv found nothing"
            );
            tokio::task::yield_now().await;
        };
        assert_eq!(first, Ok(delivered("k1")));
        assert_eq!(events.recv().await, Ok(delivered("k2")));
        node.kill().await.unwrap();
        assert_eq!(events.recv().await, Err(EventsError::Closed));
    }
}
