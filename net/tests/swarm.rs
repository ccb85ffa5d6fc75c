//! Loopback swarm tests: real TCP/QUIC connections on 127.0.0.1, every wait bounded.

use std::{future::Future, time::Duration};

use hearth_net::{
    is_quic, loopback_listen_addrs, relayed_addr, spawn, with_peer_id, Client, Event, Keypair,
    MessageId, Multiaddr, NetConfig, NetError, PeerId, Protocol, Role, RunLimits, Topic,
    Validation,
};
use tokio::{sync::mpsc::Receiver, time::timeout};

const WAIT: Duration = Duration::from_secs(20);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

struct Node {
    client: Client,
    events: Receiver<Event>,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
}

impl Node {
    fn tcp(&self) -> Multiaddr {
        let addr = self
            .addrs
            .iter()
            .find(|a| !is_quic(a))
            .expect("a TCP listen address");
        with_peer_id(addr, self.peer)
    }

    fn quic(&self) -> Multiaddr {
        let addr = self
            .addrs
            .iter()
            .find(|a| is_quic(a))
            .expect("a QUIC listen address");
        with_peer_id(addr, self.peer)
    }

    /// Waits for the first event `f` maps to `Some`, dropping the others.
    async fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(Event) -> Option<T>) -> T {
        let found = timeout(WAIT, async {
            while let Some(event) = self.events.recv().await {
                if let Some(t) = f(event) {
                    return Some(t);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(t)) => t,
            Ok(None) => panic!("event stream ended while waiting for {what}"),
            Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
        }
    }

    /// Asserts that no event `f` matches arrives within `window`.
    async fn expect_none(
        &mut self,
        what: &str,
        window: Duration,
        mut f: impl FnMut(&Event) -> bool,
    ) {
        let seen = timeout(window, async {
            while let Some(event) = self.events.recv().await {
                if f(&event) {
                    return Some(event);
                }
            }
            None
        })
        .await;
        if let Ok(Some(event)) = seen {
            panic!("unexpected {what}: {event:?}");
        }
    }
}

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}

fn config(role: Role) -> NetConfig {
    let mut c = NetConfig::new(Keypair::generate_ed25519(), "test", role);
    c.listen = loopback_listen_addrs(0);
    c.request_timeout = Duration::from_secs(10);
    c
}

fn worker(subscribe_deltas: bool) -> NetConfig {
    config(Role::Worker { subscribe_deltas })
}

async fn start(cfg: NetConfig) -> Node {
    init_tracing();
    let want = cfg
        .listen
        .iter()
        .filter(|a| cfg.psk.is_none() || !is_quic(a))
        .count();
    let (client, events) = spawn(cfg).expect("spawn node");
    let peer = client.local_peer_id();
    let addrs = within("listen addresses", async {
        loop {
            let addrs = client.listen_addrs().await;
            if addrs.len() >= want {
                return addrs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    Node {
        client,
        events,
        peer,
        addrs,
    }
}

/// `from` asks `to` for a blob; `to` answers with `body`. What `from` got.
async fn blob_reply(from: &Node, to: &mut Node, body: Vec<u8>) -> Result<Vec<u8>, NetError> {
    let client = from.client.clone();
    let target = to.peer;
    let pending = tokio::spawn(async move {
        client
            .request(target, Protocol::Blob, b"get".to_vec())
            .await
    });
    let token = to
        .wait_for("blob request", |e| match e {
            Event::Request { channel, .. } => Some(channel),
            _ => None,
        })
        .await;
    to.client.respond(token, body).await.expect("respond");
    within("blob response", pending).await.unwrap()
}

/// `node` publishes `data` on `topic`, retrying until a peer has subscribed.
async fn publish_once_subscribed(node: &Node, topic: Topic, data: Vec<u8>) {
    within("a subscribed peer", async {
        while node.client.publish(topic, data.clone()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// `from` sends `data` to `to` on `protocol`; `to` answers with the bytes reversed.
async fn round_trip(from: &Node, to: &mut Node, protocol: Protocol, data: Vec<u8>) -> Vec<u8> {
    let client = from.client.clone();
    let target = to.peer;
    let sent = data.clone();
    let pending = tokio::spawn(async move { client.request(target, protocol, sent).await });
    let from_peer = from.peer;
    let (got, token) = to
        .wait_for("inbound request", |e| match e {
            Event::Request {
                peer,
                protocol: p,
                data,
                channel,
            } if peer == from_peer && p == protocol => Some((data, channel)),
            _ => None,
        })
        .await;
    assert_eq!(got, data, "request body arrives unchanged");
    assert_eq!(token.peer(), from_peer);
    assert_eq!(token.protocol(), protocol);
    let mut answer = got;
    answer.reverse();
    to.client.respond(token, answer).await.expect("respond");
    within("response", pending)
        .await
        .expect("request task")
        .expect("response")
}

async fn request_response_over(quic: bool) {
    let mut coord = start(config(Role::Coordinator)).await;
    let mut work = start(worker(false)).await;
    let addr = if quic { coord.quic() } else { coord.tcp() };
    let connected = within("dial", work.client.dial(addr)).await.expect("dial");
    assert_eq!(connected, coord.peer);
    assert_eq!(work.client.connected_peers().await, vec![coord.peer]);
    for (i, protocol) in Protocol::ALL.into_iter().enumerate() {
        let data: Vec<u8> = (0..1000u32).map(|x| (x * 7 + i as u32) as u8).collect();
        let mut expected = data.clone();
        expected.reverse();
        let back = round_trip(&work, &mut coord, protocol, data).await;
        assert_eq!(back, expected, "{protocol} response");
    }
    // And the other way: the coordinator asks the worker.
    let back = round_trip(&coord, &mut work, Protocol::Blob, b"chunk 3".to_vec()).await;
    assert_eq!(back, b"3 knuhc");
    coord.client.shutdown().await;
    work.client.shutdown().await;
}

#[tokio::test]
async fn request_response_over_tcp() {
    request_response_over(false).await;
}

#[tokio::test]
async fn request_response_over_quic() {
    request_response_over(true).await;
}

#[tokio::test]
async fn dial_to_a_closed_port_fails_cleanly() {
    let node = start(worker(false)).await;
    let err = within(
        "dial",
        node.client.dial("/ip4/127.0.0.1/tcp/1".parse().unwrap()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, NetError::Dial { .. }), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the dial error keeps libp2p's as its source: {err:?}"
    );
    assert!(node.client.connected_peers().await.is_empty());
}

#[test]
fn spawn_outside_a_runtime_is_an_error() {
    let err = spawn(worker(false)).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[tokio::test]
async fn requests_and_responses_over_the_cap_fail_without_reaching_the_app() {
    let mut coord_cfg = config(Role::Coordinator);
    coord_cfg.max_request_bytes = 1024;
    let mut coord = start(coord_cfg).await;
    let mut work_cfg = worker(false);
    work_cfg.max_request_bytes = 1 << 20; // the worker itself would send more
    work_cfg.max_response_bytes = 2048;
    let work = start(work_cfg).await;
    within("dial", work.client.dial(coord.tcp())).await.unwrap();

    // 4 KiB request against a 1 KiB cap: refused while reading, the app never sees it.
    let err = within(
        "oversized request",
        work.client
            .request(coord.peer, Protocol::Join, vec![1u8; 4096]),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Request {
                protocol: Protocol::Join,
                ..
            }
        ),
        "{err}"
    );
    coord
        .expect_none(
            "oversized request at the app",
            Duration::from_millis(300),
            |e| matches!(e, Event::Request { .. }),
        )
        .await;
    assert_eq!(coord.client.rejected_frames(), 1, "refused by the codec");

    // Exactly at the cap still goes through, on the same or a fresh connection.
    let back = round_trip(&work, &mut coord, Protocol::Join, vec![9u8; 1024]).await;
    assert_eq!(back.len(), 1024);

    // A response over the worker's 2 KiB response cap fails on the worker.
    let err = blob_reply(&work, &mut coord, vec![0u8; 4096])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Request {
                protocol: Protocol::Blob,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        work.client.rejected_frames(),
        1,
        "response refused by the worker's codec"
    );

    // A request over our own cap is refused locally.
    let mut small = worker(false);
    small.max_request_bytes = 100;
    let small = start(small).await;
    let err = small
        .client
        .request(coord.peer, Protocol::Delta, vec![0u8; 101])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NetError::TooLarge {
                what: "request",
                len: 101,
                max: 100
            }
        ),
        "{err}"
    );

    // The link still works afterwards.
    let back = round_trip(&work, &mut coord, Protocol::Delta, b"ok".to_vec()).await;
    assert_eq!(back, b"ko");
}

#[tokio::test]
async fn gossip_is_forwarded_only_after_validation() {
    let mut coord = start(config(Role::Coordinator)).await;
    let publisher = start(worker(false)).await;
    let mut relay = start(worker(true)).await;
    within("dial", publisher.client.dial(coord.tcp()))
        .await
        .unwrap();
    within("dial", relay.client.dial(coord.tcp()))
        .await
        .unwrap();
    let relay_peer = relay.peer;
    coord
        .wait_for("relaying worker subscribes to deltas", |e| match e {
            Event::Subscribed {
                peer,
                topic: Topic::Deltas,
            } if peer == relay_peer => Some(()),
            _ => None,
        })
        .await;
    // Let two heartbeats graft the relaying worker into the coordinator's mesh.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Accepted message: forwarded to the relaying worker, but only after Accept.
    let first = b"delta from worker 1, round 4".to_vec();
    let id = within(
        "publish",
        publisher.client.publish(Topic::Deltas, first.clone()),
    )
    .await
    .expect("publish");
    assert_eq!(id, MessageId::of(&first));
    assert_eq!(id.as_bytes(), blake3::hash(&first).as_bytes());
    let (message_id, source_peer) = coord
        .wait_for("gossip at coordinator", |e| match e {
            Event::Gossip {
                topic: Topic::Deltas,
                message_id,
                propagation_source,
                source,
                data,
            } => {
                assert_eq!(data, first);
                assert_eq!(source, Some(propagation_source));
                Some((message_id, propagation_source))
            }
            _ => None,
        })
        .await;
    assert_eq!(message_id, id);
    assert_eq!(source_peer, publisher.peer);
    relay
        .expect_none(
            "gossip before validation",
            Duration::from_millis(1500),
            |e| matches!(e, Event::Gossip { .. }),
        )
        .await;
    let found = coord
        .client
        .report_validation(message_id, source_peer, Validation::Accept)
        .await
        .unwrap();
    assert!(found, "message still cached at validation time");
    let coord_peer = coord.peer;
    let (relayed_id, relayed_source, via) = relay
        .wait_for("forwarded gossip", |e| match e {
            Event::Gossip {
                message_id,
                source,
                propagation_source,
                data,
                ..
            } if data == first => Some((message_id, source, propagation_source)),
            _ => None,
        })
        .await;
    assert_eq!(relayed_id, id);
    assert_eq!(
        relayed_source,
        Some(publisher.peer),
        "signer is the publisher"
    );
    assert_eq!(via, coord_peer, "forwarded by the coordinator");

    // Rejected message: never reaches the relaying worker.
    let second = b"garbage delta".to_vec();
    within(
        "publish",
        publisher.client.publish(Topic::Deltas, second.clone()),
    )
    .await
    .expect("publish");
    let (bad_id, bad_source) = coord
        .wait_for("second gossip", |e| match e {
            Event::Gossip {
                message_id,
                propagation_source,
                data,
                ..
            } if data == second => Some((message_id, propagation_source)),
            _ => None,
        })
        .await;
    assert!(coord
        .client
        .report_validation(bad_id, bad_source, Validation::Reject)
        .await
        .unwrap());
    relay
        .expect_none(
            "rejected gossip",
            Duration::from_secs(3),
            |e| matches!(e, Event::Gossip { data, .. } if *data == second),
        )
        .await;
    // A second report for the same message finds nothing.
    assert!(!coord
        .client
        .report_validation(MessageId::of(&second), bad_source, Validation::Accept)
        .await
        .unwrap());
}

#[tokio::test]
async fn gossip_size_limit_is_enforced_on_publish() {
    let mut cfg = config(Role::Coordinator);
    cfg.max_transmit_size = 16 * 1024;
    let mut coord = start(cfg).await;
    let mut wcfg = worker(false);
    wcfg.max_transmit_size = 16 * 1024;
    let max_payload = 16 * 1024 - hearth_net::gossip_overhead("test");
    let work = start(wcfg).await;
    within("dial", work.client.dial(coord.tcp())).await.unwrap();

    let err = work
        .client
        .publish(Topic::Deltas, vec![0u8; 16 * 1024])
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetError::TooLarge { what: "gossip message", len: 16384, max } if max == max_payload),
        "{err}"
    );
    // The largest allowed payload crosses the wire intact.
    let biggest: Vec<u8> = (0..max_payload).map(|i| (i % 251) as u8).collect();
    within(
        "publish",
        work.client.publish(Topic::Deltas, biggest.clone()),
    )
    .await
    .expect("publish at the limit");
    let got = coord
        .wait_for("largest gossip", |e| match e {
            Event::Gossip { data, .. } => Some(data),
            _ => None,
        })
        .await;
    assert_eq!(got, biggest);
}

/// A worker that learns the run by joining: started without a run, it talks request-response at
/// once, has no topic until it subscribes, then takes the run's gossip and caps; gossip within its
/// frame limit but over the run's is rejected.
#[tokio::test]
async fn a_node_without_a_run_subscribes_after_joining() {
    let mut ccfg = config(Role::Coordinator);
    ccfg.max_transmit_size = 16 * 1024;
    let mut coord = start(ccfg).await;
    let mut wcfg = NetConfig::without_run(
        Keypair::generate_ed25519(),
        Role::Worker {
            subscribe_deltas: true,
        },
    );
    wcfg.listen = loopback_listen_addrs(0);
    wcfg.max_transmit_size = 64 * 1024; // the largest run it may enter
    wcfg.max_response_bytes = 2048;
    let mut work = start(wcfg).await;
    within("dial", work.client.dial(coord.tcp())).await.unwrap();
    // Request-response works before the run is known (the join).
    let back = round_trip(&work, &mut coord, Protocol::Join, b"hello".to_vec()).await;
    assert_eq!(back, b"olleh");
    // No topic yet: publishing says so.
    let err = work
        .client
        .publish(Topic::Announce, b"x".to_vec())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not entered a run"), "{err}");

    let limits = |max_transmit_size| RunLimits {
        max_transmit_size,
        blob_chunk_size: 8192,
        max_delta_bytes: 0,
    };
    // A run whose frames exceed what the node was built for is refused.
    let err = work
        .client
        .subscribe("test", limits(128 * 1024))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("more than"), "{err}");
    work.client
        .subscribe("test", limits(16 * 1024))
        .await
        .expect("subscribe");
    // Idempotent for the same run, refused for another.
    work.client
        .subscribe("test", limits(16 * 1024))
        .await
        .expect("again");
    let err = work
        .client
        .subscribe("other", limits(16 * 1024))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");

    // The coordinator's announcement reaches the worker once the subscription is known.
    publish_once_subscribed(&coord, Topic::Announce, b"round 1".to_vec()).await;
    let got = work
        .wait_for("announcement", |e| match e {
            Event::Gossip { topic, data, .. } => (topic == Topic::Announce).then_some(data),
            _ => None,
        })
        .await;
    assert_eq!(got, b"round 1");
    // Responses grew to a blob chunk plus framing.
    let chunk = blob_reply(&work, &mut coord, vec![5u8; 8192])
        .await
        .expect("a chunk over the first cap");
    assert_eq!(chunk.len(), 8192);

    // Gossip within the worker's 64 KiB frames but over the run's 16 KiB is rejected: a peer
    // that publishes it (built with a larger run limit) never reaches the worker's app.
    let mut big_cfg = worker(true);
    big_cfg.max_transmit_size = 64 * 1024;
    let big = start(big_cfg).await;
    within("dial", big.client.dial(work.tcp())).await.unwrap();
    let oversized = vec![7u8; 32 * 1024];
    publish_once_subscribed(&big, Topic::Deltas, oversized).await;
    work.expect_none(
        "gossip over the run's limit",
        Duration::from_secs(2),
        |e| matches!(e, Event::Gossip { data, .. } if data.len() == 32 * 1024),
    )
    .await;
}

#[tokio::test]
async fn publish_without_peers_fails_after_retrying() {
    let lonely = start(worker(false)).await;
    let started = std::time::Instant::now();
    let err = within(
        "publish",
        lonely.client.publish(Topic::Announce, b"hi".to_vec()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Publish {
                topic: Topic::Announce,
                ..
            }
        ),
        "{err}"
    );
    let min = hearth_net::PUBLISH_RETRY_DELAY * (hearth_net::PUBLISH_ATTEMPTS - 1);
    assert!(
        started.elapsed() >= min,
        "retried for {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn banned_peer_is_dropped_and_cannot_reconnect() {
    let mut coord = start(config(Role::Coordinator)).await;
    let mut work = start(worker(false)).await;
    within("dial", work.client.dial(coord.tcp())).await.unwrap();
    let bad = work.peer;
    coord
        .wait_for("worker connected", |e| {
            matches!(e, Event::PeerConnected(p) if p == bad).then_some(())
        })
        .await;

    coord.client.ban(bad).await.unwrap();
    coord
        .wait_for("worker disconnected", |e| {
            matches!(e, Event::PeerDisconnected(p) if p == bad).then_some(())
        })
        .await;
    let coord_peer = coord.peer;
    work.wait_for("coordinator gone", |e| {
        matches!(e, Event::PeerDisconnected(p) if p == coord_peer).then_some(())
    })
    .await;
    assert!(coord.client.connected_peers().await.is_empty());

    // Redials from the banned peer are closed at once; the coordinator cannot dial it either.
    for _ in 0..3 {
        let _ = within("redial", work.client.dial(coord.tcp())).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!coord.client.connected_peers().await.contains(&bad));
    }
    let err = within("dial banned", coord.client.dial(work.tcp()))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Dial { .. }), "{err}");
    coord
        .expect_none(
            "banned peer connected",
            Duration::from_millis(500),
            |e| matches!(e, Event::PeerConnected(p) if *p == bad),
        )
        .await;

    // Unbanned, it may come back.
    coord.client.unban(bad).await.unwrap();
    within("dial after unban", work.client.dial(coord.tcp()))
        .await
        .expect("dial after unban");
    coord
        .wait_for("reconnected", |e| {
            matches!(e, Event::PeerConnected(p) if p == bad).then_some(())
        })
        .await;
}

#[tokio::test]
async fn workers_reach_each_other_through_the_coordinator_relay() {
    let coord = start(config(Role::Coordinator)).await;
    let mut hidden = start(worker(false)).await;
    let other = start(worker(false)).await;
    within("dial", hidden.client.dial(coord.tcp()))
        .await
        .unwrap();
    let coord_tcp = coord.tcp();
    let err = hidden
        .client
        .listen_via_relay("/ip4/127.0.0.1/tcp/9".parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/p2p/<relay peer id>"), "{err}");
    hidden
        .client
        .listen_via_relay(coord_tcp.clone())
        .await
        .expect("listen via relay");
    let relay = hidden
        .wait_for("relay reservation", |e| match e {
            Event::RelayReservation { relay } => Some(relay),
            _ => None,
        })
        .await;
    assert_eq!(relay, coord.peer);

    within("dial", other.client.dial(coord.tcp()))
        .await
        .unwrap();
    let circuit = relayed_addr(&coord_tcp, coord.peer, hidden.peer);
    let reached = within("dial through relay", other.client.dial(circuit))
        .await
        .expect("dial through relay");
    assert_eq!(reached, hidden.peer);
    let back = round_trip(&other, &mut hidden, Protocol::Delta, b"via relay".to_vec()).await;
    assert_eq!(back, b"yaler aiv");
}

fn private(role: Role, psk: [u8; 32]) -> NetConfig {
    let mut c = config(role);
    c.psk = Some(psk);
    c
}

#[tokio::test]
async fn private_network_admits_only_holders_of_the_key() {
    let key = [7u8; 32];
    let mut coord = start(private(Role::Coordinator, key)).await;
    assert!(
        coord.addrs.iter().all(|a| !is_quic(a)),
        "no QUIC with psk: {:?}",
        coord.addrs
    );
    let member = start(private(
        Role::Worker {
            subscribe_deltas: false,
        },
        key,
    ))
    .await;
    within("dial with psk", member.client.dial(coord.tcp()))
        .await
        .expect("same key connects");
    let back = round_trip(&member, &mut coord, Protocol::Join, b"member".to_vec()).await;
    assert_eq!(back, b"rebmem");

    // A wrong key garbles the stream: the handshake fails at once or at the 10 s upgrade timeout.
    let outsider = start(private(
        Role::Worker {
            subscribe_deltas: false,
        },
        [8u8; 32],
    ))
    .await;
    let public = start(worker(false)).await;
    let (wrong_key, no_key) = within("dials without the key", async {
        tokio::join!(
            outsider.client.dial(coord.tcp()),
            public.client.dial(coord.tcp())
        )
    })
    .await;
    for err in [wrong_key.unwrap_err(), no_key.unwrap_err()] {
        assert!(matches!(err, NetError::Dial { .. }), "{err}");
    }
    assert_eq!(coord.client.connected_peers().await, vec![member.peer]);
}

#[tokio::test]
async fn idle_link_outlives_the_libp2p_default_timeout() {
    let mut coord = start(config(Role::Coordinator)).await;
    let work = start(worker(false)).await;
    within("dial", work.client.dial(coord.tcp())).await.unwrap();
    // libp2p closes idle connections after 10 s by default; ours is 1 h.
    let worker_peer = work.peer;
    coord
        .expect_none(
            "disconnect while idle",
            Duration::from_secs(12),
            |e| matches!(e, Event::PeerDisconnected(p) if *p == worker_peer),
        )
        .await;
    assert_eq!(coord.client.connected_peers().await, vec![work.peer]);
}

#[tokio::test]
async fn a_worker_holds_a_reservation_on_the_relay_it_dials_without_asking() {
    let coord = start(config(Role::Coordinator)).await;
    // No listen address at all: like a volunteer behind NAT, reachable only through the relay.
    let mut cfg = worker(false);
    cfg.listen = Vec::new();
    let (client, events) = spawn(cfg).expect("spawn node");
    let mut hidden = Node {
        peer: client.local_peer_id(),
        client,
        events,
        addrs: Vec::new(),
    };
    within("dial", hidden.client.dial(coord.tcp()))
        .await
        .unwrap();
    // The reservation and the circuit listen address arrive in either order.
    let (mut relay, mut listening) = (None, None);
    while relay.is_none() || listening.is_none() {
        match hidden
            .wait_for("automatic relay reservation", |e| match e {
                Event::RelayReservation { relay } => Some(Ok(relay)),
                Event::Listening(a) => Some(Err(a)),
                _ => None,
            })
            .await
        {
            Ok(r) => relay = Some(r),
            Err(a) => listening = Some(a),
        }
    }
    assert_eq!(relay, Some(coord.peer));
    let listening = listening.unwrap_or_else(Multiaddr::empty);
    // `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<us>`
    assert!(
        hearth_net::is_relayed(&listening)
            && listening.to_string().contains(&coord.peer.to_string())
            && hearth_net::peer_id_of(&listening) == Some(hidden.peer),
        "{listening}"
    );
    // Asking again for the same relay is a no-op, not a second reservation.
    hidden
        .client
        .listen_via_relay(coord.tcp())
        .await
        .expect("idempotent listen via relay");
    hidden
        .expect_none("second reservation", Duration::from_secs(2), |e| {
            matches!(e, Event::RelayReservation { .. })
        })
        .await;

    let other = start(worker(false)).await;
    within("dial", other.client.dial(coord.tcp()))
        .await
        .unwrap();
    let circuit = relayed_addr(&coord.tcp(), coord.peer, hidden.peer);
    let reached = within("dial through relay", other.client.dial(circuit))
        .await
        .expect("dial through relay");
    assert_eq!(reached, hidden.peer);
    let back = round_trip(&other, &mut hidden, Protocol::Join, b"nat".to_vec()).await;
    assert_eq!(back, b"tan");
}

#[tokio::test]
async fn reservations_can_be_turned_off() {
    let coord = start(config(Role::Coordinator)).await;
    let mut cfg = worker(false);
    cfg.reserve_on_relays = false;
    let mut quiet = start(cfg).await;
    within("dial", quiet.client.dial(coord.tcp()))
        .await
        .unwrap();
    quiet
        .expect_none("reservation", Duration::from_secs(3), |e| {
            matches!(e, Event::RelayReservation { .. })
        })
        .await;
}

#[tokio::test]
async fn a_peer_opening_many_connections_is_capped() {
    let mut cfg = config(Role::Coordinator);
    cfg.max_connections_per_peer = 2;
    let coord = start(cfg).await;
    let mut hostile = worker(false);
    // The dialler does not limit itself: only the coordinator's cap is tested.
    hostile.max_connections_per_peer = 64;
    let hostile = start(hostile).await;
    for _ in 0..12 {
        let _ = within("dial", hostile.client.dial(coord.tcp())).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = coord.client.established_connections().await;
    println!("12 dials from one peer: the coordinator holds {held} connection(s)");
    assert!((1..=2).contains(&held), "held {held}");
    // The peer itself is still served.
    assert!(coord.client.connected_peers().await.contains(&hostile.peer));
}
