//! Opaque client ids. Each transport names a client connection its own way (a libzmq routing
//! id, an inproc connection number); the engine sees only [`ClientId`]s, handed out here on a
//! connection's first frame, unique in the node's life and never reused. A connection that
//! never sends gets none.
//!
//! An id is forgotten when its connection is gone. inproc always says so; a libzmq ROUTER only
//! says so when a send to it fails, so a client that sends and hangs up unnoticed would stay:
//! past `zmq_max` tcp/ipc ids, the longest idle are forgotten and reported gone, and a flood of
//! connections cannot grow these maps without bound.

use std::collections::HashMap;

use bytes::Bytes;

use crate::engine::ClientId;

/// A client connection as its transport knows it.
#[derive(Debug, Clone)]
pub(super) enum Conn {
    /// A libzmq ROUTER routing id (tcp and ipc).
    Zmq(Bytes),
    /// An inproc connection number.
    Inproc(u64),
}

#[derive(Debug)]
struct Client {
    conn: Conn,
    /// When it last sent or was sent to, on the `tick` clock.
    active: u64,
}

#[derive(Debug)]
pub(super) struct ClientIds {
    next: u64,
    /// Counts sends and receives: an order of activity without reading a clock.
    tick: u64,
    by_id: HashMap<ClientId, Client>,
    zmq: HashMap<Bytes, ClientId>,
    inproc: HashMap<u64, ClientId>,
    zmq_max: usize,
}

impl ClientIds {
    /// Ids for a node that keeps at most `zmq_max` tcp/ipc clients it has not seen go.
    pub(super) fn new(zmq_max: usize) -> Self {
        Self {
            next: 1,
            tick: 0,
            by_id: HashMap::new(),
            zmq: HashMap::new(),
            inproc: HashMap::new(),
            zmq_max: zmq_max.max(1),
        }
    }

    /// The id of the tcp/ipc client that sent a frame, new if it had none; `forgotten` gets
    /// the ids let go to stay within `zmq_max`.
    pub(super) fn heard_zmq(
        &mut self,
        routing_id: Bytes,
        forgotten: &mut Vec<ClientId>,
    ) -> ClientId {
        if let Some(id) = self.zmq.get(&routing_id) {
            let id = id.clone();
            self.touch(&id);
            return id;
        }
        let id = self.allocate(Conn::Zmq(routing_id.clone()));
        self.zmq.insert(routing_id, id.clone());
        if self.zmq.len() > self.zmq_max {
            self.forget_idle_zmq(forgotten);
        }
        id
    }

    /// The id of the inproc client that sent a frame, new if it had none.
    pub(super) fn heard_inproc(&mut self, client: u64) -> ClientId {
        if let Some(id) = self.inproc.get(&client) {
            let id = id.clone();
            self.touch(&id);
            return id;
        }
        let id = self.allocate(Conn::Inproc(client));
        self.inproc.insert(client, id.clone());
        id
    }

    fn allocate(&mut self, conn: Conn) -> ClientId {
        let id = client_id(self.next);
        self.next += 1;
        self.tick += 1;
        let client = Client {
            conn,
            active: self.tick,
        };
        self.by_id.insert(id.clone(), client);
        id
    }

    fn touch(&mut self, id: &ClientId) {
        if let Some(client) = self.by_id.get_mut(id) {
            self.tick += 1;
            client.active = self.tick;
        }
    }

    /// Where to send to a client, counting the send as activity.
    pub(super) fn conn(&mut self, id: &ClientId) -> Option<&Conn> {
        let client = self.by_id.get_mut(id)?;
        self.tick += 1;
        client.active = self.tick;
        Some(&client.conn)
    }

    /// Whether the client is carried by libzmq.
    pub(super) fn is_zmq(&self, id: &ClientId) -> bool {
        matches!(
            self.by_id.get(id),
            Some(Client {
                conn: Conn::Zmq(_),
                ..
            })
        )
    }

    /// The id of a tcp/ipc client, if it has one.
    pub(super) fn zmq(&self, routing_id: &Bytes) -> Option<ClientId> {
        self.zmq.get(routing_id).cloned()
    }

    /// The id of an inproc client, if it has one.
    pub(super) fn inproc(&self, client: u64) -> Option<ClientId> {
        self.inproc.get(&client).cloned()
    }

    /// Forgets a client whose connection is gone; its id, if it had one.
    pub(super) fn remove(&mut self, id: &ClientId) -> Option<ClientId> {
        let client = self.by_id.remove(id)?;
        match client.conn {
            Conn::Zmq(routing_id) => self.zmq.remove(&routing_id),
            Conn::Inproc(client) => self.inproc.remove(&client),
        }
    }

    /// Forgets every tcp/ipc client (their transport is gone), longest idle first.
    pub(super) fn remove_all_zmq(&mut self) -> Vec<ClientId> {
        let mut idle = self.idle_zmq();
        idle.sort_by_key(|(active, _)| *active);
        self.zmq.clear();
        for (_, id) in &idle {
            self.by_id.remove(id);
        }
        idle.into_iter().map(|(_, id)| id).collect()
    }

    /// Every tcp/ipc client with when it was last active (each at a different tick).
    fn idle_zmq(&self) -> Vec<(u64, ClientId)> {
        (self.by_id.iter())
            .filter(|(_, c)| matches!(c.conn, Conn::Zmq(_)))
            .map(|(id, c)| (c.active, id.clone()))
            .collect()
    }

    /// Forgets the longest idle quarter of the tcp/ipc clients.
    fn forget_idle_zmq(&mut self, forgotten: &mut Vec<ClientId>) {
        let keep = self.zmq_max - self.zmq_max / 4;
        let excess = self.zmq.len().saturating_sub(keep);
        let mut idle = self.idle_zmq();
        if excess == 0 || idle.is_empty() {
            return;
        }
        if excess < idle.len() {
            idle.select_nth_unstable_by_key(excess, |(active, _)| *active);
            idle.truncate(excess);
        }
        idle.sort_by_key(|(active, _)| *active);
        for (_, id) in idle {
            if let Some(id) = self.remove(&id) {
                forgotten.push(id);
            }
        }
    }

    /// How many clients have ids.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// The engine's id for the `n`th client this node has seen.
fn client_id(n: u64) -> ClientId {
    ClientId(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn routing_id(n: u32) -> Bytes {
        let mut id = vec![0];
        id.extend_from_slice(&n.to_be_bytes());
        Bytes::from(id)
    }

    #[test]
    fn ids_are_never_reused_whichever_transport() {
        let mut ids = ClientIds::new(100);
        let mut forgotten = Vec::new();
        let a = ids.heard_zmq(routing_id(1), &mut forgotten);
        let b = ids.heard_inproc(1);
        assert_ne!(a, b);
        assert_eq!(ids.heard_zmq(routing_id(1), &mut forgotten), a);
        assert_eq!(ids.remove(&a), Some(a.clone()));
        let again = ids.heard_zmq(routing_id(1), &mut forgotten);
        assert!(again != a && again != b);
        assert_eq!(again.to_string(), "client:3");
        assert!(forgotten.is_empty());
    }

    #[test]
    fn a_flood_of_tcp_clients_forgets_the_longest_idle() {
        let mut ids = ClientIds::new(8);
        let mut forgotten = Vec::new();
        let first = ids.heard_zmq(routing_id(0), &mut forgotten);
        for n in 1..1000 {
            ids.heard_zmq(routing_id(n), &mut forgotten);
            // The first client keeps talking, so it is never the idlest.
            ids.heard_zmq(routing_id(0), &mut forgotten);
            assert!(ids.len() <= 8);
        }
        assert!(!forgotten.contains(&first));
        assert_eq!(ids.zmq(&routing_id(0)), Some(first));
        assert_eq!(forgotten.len() + ids.len(), 1000);
        // Each is told once.
        let told: std::collections::HashSet<_> = forgotten.iter().collect();
        assert_eq!(told.len(), forgotten.len());
    }

    #[test]
    fn inproc_clients_are_not_capped() {
        let mut ids = ClientIds::new(2);
        for n in 0..10 {
            ids.heard_inproc(n);
        }
        assert_eq!(ids.len(), 10);
        assert!(ids.inproc(3).is_some());
        assert!(!ids.is_zmq(&ids.inproc(3).unwrap()));
    }
}
