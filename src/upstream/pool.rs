//! The instances of one service: a node list read lock-free on the request path and
//! replaced whole when discovery reports a change, and the round-robin pick over it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tonic::transport::Endpoint;

use super::breaker::Breaker;
use super::connection::{ConnectSettings, Connection};
use crate::telemetry::metrics::CallSeries;

/// One backend instance and its reusable HTTP/2 connection.
#[derive(Debug)]
pub struct Node {
    /// Instance id (the Consul service id, or the address for static upstreams); shared
    /// text, so the per-request record takes a reference count, not a copy.
    pub id: Arc<str>,
    /// `host:port`.
    pub address: String,
    /// Created once per instance; every call to the instance reuses it.
    pub connection: Connection,
    /// The instance's breaker, kept by id across node-list changes.
    pub breaker: Arc<Breaker>,
    /// Its call metrics, resolved on first use.
    pub calls: CallSeries,
}

impl Node {
    /// A node whose connections are made lazily, on first use, with `connect`.
    pub fn new(
        id: String,
        address: String,
        connect: ConnectSettings,
        breaker: Arc<Breaker>,
    ) -> Result<Self, tonic::transport::Error> {
        // The address is checked as an endpoint URI, as before (same error type).
        let endpoint = Endpoint::from_shared(format!("http://{address}"))?;
        let authority = endpoint
            .uri()
            .authority()
            .cloned()
            .unwrap_or_else(|| http::uri::Authority::from_static("localhost"));
        let connection = Connection::new(address.clone(), authority, connect);
        Ok(Self {
            id: id.into(),
            address,
            connection,
            breaker,
            calls: CallSeries::default(),
        })
    }
}

/// An immutable snapshot of a service's instances.
#[derive(Debug, Default)]
pub struct NodeList {
    pub nodes: Vec<Arc<Node>>,
    /// Whether discovery has loaded this service at least once.
    pub loaded: bool,
}

/// A service's current node list and round-robin cursor.
#[derive(Debug)]
pub struct ServicePool {
    list: ArcSwap<NodeList>,
    next: AtomicUsize,
    /// Bumped on every replacement, so observers can await a change.
    generation: watch::Sender<u64>,
}

impl Default for ServicePool {
    fn default() -> Self {
        Self {
            list: ArcSwap::default(),
            next: AtomicUsize::new(0),
            generation: watch::Sender::new(0),
        }
    }
}

impl ServicePool {
    /// A pool serving `nodes`.
    pub fn new(nodes: Vec<Arc<Node>>) -> Self {
        let pool = Self::default();
        pool.replace(nodes);
        pool
    }

    /// The current snapshot (one atomic load, no lock).
    pub fn snapshot(&self) -> Arc<NodeList> {
        self.list.load_full()
    }

    /// Replaces the whole list.
    pub fn replace(&self, nodes: Vec<Arc<Node>>) {
        self.list.store(Arc::new(NodeList {
            nodes,
            loaded: true,
        }));
        self.generation.send_modify(|g| *g += 1);
    }

    /// A receiver that sees every replacement (for tests and metrics; never used on the
    /// request path).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The next node in round-robin order, skipping nodes `accept` refuses (for
    /// example ones whose breaker is open).
    pub fn pick(&self, accept: impl Fn(&Node) -> bool) -> Result<Arc<Node>, NoPick> {
        let list = self.list.load();
        let len = list.nodes.len();
        if len == 0 {
            return Err(NoPick::Empty);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|offset| &list.nodes[(start + offset) % len])
            .find(|node| accept(node))
            .cloned()
            .ok_or_else(|| NoPick::AllRefused(list.nodes[start % len].clone()))
    }
}

/// Why no node was picked.
#[derive(Debug)]
pub enum NoPick {
    /// The list is empty (or never loaded).
    Empty,
    /// Every node was refused; one of them, for the error message.
    AllRefused(Arc<Node>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<Arc<Node>> {
        (0..n)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", 40000 + i);
                let breaker = Arc::new(Breaker::new(Default::default()));
                Arc::new(
                    Node::new(
                        addr.clone(),
                        addr,
                        ConnectSettings {
                            timeout: std::time::Duration::from_secs(1),
                            lanes: 1,
                        },
                        breaker,
                    )
                    .expect("node"),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn round_robin_visits_every_node_in_turn() {
        let pool = ServicePool::new(nodes(3));
        let picks: Vec<Arc<str>> = (0..6)
            .filter_map(|_| pool.pick(|_| true).ok())
            .map(|n| n.id.clone())
            .collect();
        assert_eq!(picks[0..3], picks[3..6]);
        let mut first = picks[0..3].to_vec();
        first.sort();
        first.dedup();
        assert_eq!(first.len(), 3);
    }

    #[tokio::test]
    async fn pick_skips_refused_nodes_and_empty_lists_yield_none() {
        let pool = ServicePool::new(nodes(2));
        let refused = pool.snapshot().nodes[0].id.clone();
        for _ in 0..4 {
            let node = pool.pick(|n| n.id != refused).expect("one acceptable");
            assert_ne!(node.id, refused);
        }
        assert!(matches!(pool.pick(|_| false), Err(NoPick::AllRefused(_))));
        assert!(matches!(
            ServicePool::default().pick(|_| true),
            Err(NoPick::Empty)
        ));
        assert!(!ServicePool::default().snapshot().loaded);
    }
}
