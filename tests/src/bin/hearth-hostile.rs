//! `hearth-hostile`: a misbehaving peer for the abuse tests, built on `hearth-net` (loopback only).
//!
//! `hearth-hostile MODE COORDINATOR_MULTIADDR --run-id ID [--count N] [--secs S] [--cid HEX] [--token T]
//! [--swarm-key FILE]` prints one JSON line with what it sent and what came back (with
//! `--swarm-key` its nodes use that pre-shared key, a peer of a private swarm or one with the
//! wrong key; without it they speak plain TCP/QUIC). Modes:
//! - `flood-gossip`: `count` signed, well-formed but stale deltas on the deltas topic (distinct
//!   payloads, as fast as gossip takes them), then, from a second joined peer, garbage until banned;
//! - `flood-rr`: `count` join, blob and delta requests each, `--concurrency` in flight;
//! - `oversized`: requests over the coordinator's request cap on every protocol, and a gossip
//!   frame over the run's `max_transmit_size`;
//! - `connections`: `count` peers with fresh identities that connect and hold for `secs`;
//! - `unadmitted`: join, blob request, direct and gossiped deltas from a peer a closed run does not admit.
//! - `knock`: `count` peers with fresh identities each try once to connect, `--concurrency` at a
//!   time, and leave (against a private swarm without its key: how many got in, how fast they failed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hearth_net::{Client, Event, Keypair, Multiaddr, NetConfig, PeerId, Protocol, Role, Topic};
use hearth_proto::{
    encode, encode_delta, BlobRequest, BlobResponse, CodecSpec, ContentId, DeltaAck, DeltaMessage,
    Domain, JoinRequest, NamedTensor, Residual, RunSpec, SignedEnvelope, Wire, PROTOCOL_VERSION,
};
use hearth_worker::client::CoordinatorClient;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

/// Command-line options (`--key value` pairs after the mode and address).
struct Opts {
    mode: String,
    coordinator: Multiaddr,
    peer: PeerId,
    run_id: String,
    count: usize,
    secs: u64,
    concurrency: usize,
    cid: Option<ContentId>,
    token: Option<String>,
    swarm_key: Option<hearth_net::SwarmKey>,
}

fn parse() -> Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, addr, rest @ ..] = args.as_slice() else {
        bail!("usage: hearth-hostile MODE COORDINATOR_MULTIADDR --run-id ID [--count N] [--secs S] [--concurrency C] [--cid HEX] [--token T] [--swarm-key FILE]");
    };
    let mut kv = HashMap::new();
    for pair in rest.chunks(2) {
        match pair {
            [k, v] if k.starts_with("--") => {
                kv.insert(k.trim_start_matches("--").to_string(), v.clone());
            }
            _ => bail!("bad arguments near {pair:?}"),
        }
    }
    let coordinator: Multiaddr = addr.parse().context("coordinator address")?;
    let peer = hearth_net::peer_id_of(&coordinator)
        .ok_or_else(|| anyhow!("the address must end in /p2p/<peer id>"))?;
    let num = |k: &str, d: u64| -> Result<u64> {
        kv.get(k)
            .map(|v| v.parse().with_context(|| format!("--{k}")))
            .unwrap_or(Ok(d))
    };
    Ok(Opts {
        mode: mode.clone(),
        coordinator,
        peer,
        run_id: kv
            .get("run-id")
            .cloned()
            .ok_or_else(|| anyhow!("--run-id is required"))?,
        count: num("count", 100)? as usize,
        secs: num("secs", 10)?,
        concurrency: num("concurrency", 16)?.max(1) as usize,
        cid: kv
            .get("cid")
            .map(|c| c.parse().context("--cid"))
            .transpose()?,
        token: kv.get("token").cloned(),
        swarm_key: kv
            .get("swarm-key")
            .map(|f| hearth_net::SwarmKey::load(std::path::Path::new(f)).context("--swarm-key"))
            .transpose()?,
    })
}

/// A node of our own with a fresh identity; its events are drained.
struct Node {
    net: Client,
    key: Keypair,
    disconnects: Arc<AtomicU64>,
}

async fn node(o: &Opts, subscribe_deltas: bool, big_frames: bool) -> Result<Node> {
    let key = Keypair::generate_ed25519();
    let mut cfg = NetConfig::new(
        key.clone(),
        o.run_id.clone(),
        Role::Worker { subscribe_deltas },
    );
    cfg.listen = Vec::new();
    cfg.psk = o.swarm_key.as_ref().map(hearth_net::SwarmKey::to_bytes);
    cfg.request_timeout = Duration::from_secs(20);
    if big_frames {
        // Our own caps only limit what we accept; raise them so we can send what the coordinator must refuse.
        cfg.max_request_bytes = 64 << 20;
        cfg.max_transmit_size = 8 << 20;
    }
    let (net, events) = hearth_net::spawn(cfg)?;
    let disconnects = Arc::new(AtomicU64::new(0));
    drain(net.clone(), events, disconnects.clone());
    net.dial(o.coordinator.clone())
        .await
        .context("dialing the coordinator")?;
    Ok(Node {
        net,
        key,
        disconnects,
    })
}

fn drain(net: Client, mut events: mpsc::Receiver<Event>, disconnects: Arc<AtomicU64>) {
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Gossip {
                    message_id,
                    propagation_source,
                    ..
                } => {
                    let _ = net
                        .report_validation(
                            message_id,
                            propagation_source,
                            hearth_net::Validation::Accept,
                        )
                        .await;
                }
                Event::PeerDisconnected(_) => {
                    disconnects.fetch_add(1, SeqCst);
                }
                _ => {}
            }
        }
    });
}

/// The join request of a hostile peer.
fn hello(token: Option<String>) -> JoinRequest {
    JoinRequest {
        protocol_version: PROTOCOL_VERSION,
        run_id: String::new(),
        name: "hostile".into(),
        device: "cpu".into(),
        threads: 1,
        memory_bytes: 0,
        token,
    }
}

/// Join as a well-formed worker would, through the worker's own client (one attempt).
async fn join(n: &Node, o: &Opts) -> Result<(RunSpec, Option<hearth_proto::CheckpointManifest>)> {
    let me = n.key.public().to_peer_id();
    let hello = hello(o.token.clone());
    let joined = CoordinatorClient::one_shot(n.net.clone(), o.peer, me, hello)
        .join()
        .await?;
    Ok((joined.spec, joined.latest))
}

/// A signed delta message of the right shape built on checkpoint `base` (`None`: a made-up id).
fn delta(
    key: &Keypair,
    spec: Option<&RunSpec>,
    run_id: &str,
    base_round: u64,
    base: Option<ContentId>,
    tokens: u64,
) -> Result<Vec<u8>> {
    let (codec, tensors) = match spec {
        Some(s) => (
            s.aggregate.codec,
            s.adapter_layout()?
                .into_iter()
                .map(|l| NamedTensor {
                    data: vec![0.0; l.shape.iter().product()],
                    name: l.name,
                    shape: l.shape,
                })
                .collect::<Vec<_>>(),
        ),
        None => (CodecSpec::F32, Vec::new()),
    };
    let msg = DeltaMessage {
        run_id: run_id.to_string(),
        round: base_round + 1,
        base_round,
        base_checkpoint: base.or_else(|| Some(ContentId::of(&tokens.to_le_bytes()))),
        tokens_trained: tokens,
        steps: 1,
        train_loss: 1.0,
        delta: encode_delta(&codec, &tensors, &mut Residual::new())?,
    };
    Ok(SignedEnvelope::seal(key, Domain::Delta, &msg)?.to_bytes())
}

fn garbage(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8)
        .collect()
}

async fn flood_gossip(o: &Opts) -> Result<Value> {
    let n = node(o, false, false).await?;
    let (spec, latest) = join(&n, o).await?;
    let base_round = latest.as_ref().map_or(0, |m| m.round);
    let started = Instant::now();
    let end = started + Duration::from_secs(o.secs);
    let (mut published, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    for i in 0..o.count {
        if Instant::now() >= end {
            break;
        }
        // Stale (made-up base checkpoint), distinct payloads; rejected cheaply and not a strike.
        let bytes = delta(
            &n.key,
            Some(&spec),
            &o.run_id,
            base_round,
            None,
            i as u64 + 1,
        )?;
        match tokio::time::timeout(Duration::from_secs(2), n.net.publish(Topic::Deltas, bytes))
            .await
        {
            Ok(Ok(_)) => published += 1,
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(_) => failed += 1,
        }
    }
    // Then garbage from a second joined peer (the first one is rate-limited before any decoding):
    // undecodable envelopes are evidence of a bad peer and lead to a ban.
    let g = node(o, false, false).await?;
    join(&g, o).await?;
    let mut garbage_sent = 0u64;
    for i in 0..10 {
        if g.net.publish(Topic::Deltas, garbage(i, 300)).await.is_ok() {
            garbage_sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let connected = g.net.connected_peers().await.contains(&o.peer);
    Ok(json!({
        "mode": "flood-gossip", "peer": n.key.public().to_peer_id().to_base58(),
        "published": published, "failed": failed, "first_error": first_error,
        "garbage_peer": g.key.public().to_peer_id().to_base58(),
        "garbage_published": garbage_sent, "seconds": started.elapsed().as_secs_f64(),
        "garbage_peer_still_connected": connected,
    }))
}

async fn flood_rr(o: &Opts) -> Result<Value> {
    let n = node(o, false, false).await?;
    let (spec, _) = join(&n, o).await?;
    let shard = spec
        .data
        .shards
        .first()
        .map(|s| s.cid)
        .ok_or_else(|| anyhow!("no shards"))?;
    let started = Instant::now();
    let mut out = serde_json::Map::new();
    for protocol in [Protocol::Join, Protocol::Blob, Protocol::Delta] {
        let sem = Arc::new(Semaphore::new(o.concurrency));
        let ok = Arc::new(AtomicU64::new(0));
        let err = Arc::new(AtomicU64::new(0));
        let banned = Arc::new(AtomicU64::new(0));
        let bytes_in = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..o.count {
            let body = match protocol {
                Protocol::Join => encode(&hello(None)),
                Protocol::Blob => encode(&BlobRequest {
                    cid: shard,
                    offset: (i as u64 * 97) % 30_000,
                    max_len: spec.net.blob_chunk_size,
                }),
                Protocol::Delta | Protocol::Poll => garbage(i, 500),
            };
            let permit = sem.clone().acquire_owned().await?;
            let (net, ok, err, banned, bytes_in, peer) = (
                n.net.clone(),
                ok.clone(),
                err.clone(),
                banned.clone(),
                bytes_in.clone(),
                o.peer,
            );
            tasks.push(tokio::spawn(async move {
                match net.request(peer, protocol, body).await {
                    Ok(b) => {
                        ok.fetch_add(1, SeqCst);
                        if matches!(DeltaAck::from_bytes(&b), Ok(DeltaAck::Banned { .. })) {
                            banned.fetch_add(1, SeqCst);
                        }
                        bytes_in.fetch_add(b.len() as u64, SeqCst);
                    }
                    Err(_) => {
                        err.fetch_add(1, SeqCst);
                    }
                }
                drop(permit);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        out.insert(
            protocol
                .name()
                .trim_start_matches("/hearth/")
                .replace("/1", ""),
            json!({"ok": ok.load(SeqCst), "failed": err.load(SeqCst), "banned": banned.load(SeqCst),
                   "bytes_in": bytes_in.load(SeqCst)}),
        );
    }
    out.insert("mode".into(), json!("flood-rr"));
    out.insert(
        "peer".into(),
        json!(n.key.public().to_peer_id().to_base58()),
    );
    out.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
    Ok(Value::Object(out))
}

async fn oversized(o: &Opts) -> Result<Value> {
    let n = node(o, false, true).await?;
    let mut refused = 0u64;
    let mut answered = 0u64;
    for protocol in Protocol::ALL {
        for i in 0..o.count {
            let len = if i % 2 == 0 { (1 << 20) + 1 } else { 32 << 20 };
            if n.net.dial(o.coordinator.clone()).await.is_err() {
                refused += 1;
                continue;
            }
            match n.net.request(o.peer, protocol, garbage(i, len)).await {
                Ok(_) => answered += 1,
                Err(_) => refused += 1,
            }
        }
    }
    // A gossip frame over the run's max_transmit_size (the coordinator's codec drops it).
    let _ = n.net.dial(o.coordinator.clone()).await;
    let gossip = n.net.publish(Topic::Deltas, garbage(1, 1 << 20)).await;
    Ok(json!({
        "mode": "oversized", "requests_refused": refused, "requests_answered": answered,
        "gossip_1mib_publish_ok": gossip.is_ok(),
    }))
}

async fn connections(o: &Opts) -> Result<Value> {
    let mut nodes = Vec::new();
    let mut failed = 0u64;
    for _ in 0..o.count {
        match tokio::time::timeout(Duration::from_secs(10), node(o, false, false)).await {
            Ok(Ok(n)) => nodes.push(n),
            _ => failed += 1,
        }
    }
    let opened = nodes.len();
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    let mut still = 0;
    for n in &nodes {
        if n.net.connected_peers().await.contains(&o.peer) {
            still += 1;
        }
        n.net.shutdown().await;
    }
    Ok(
        json!({"mode": "connections", "opened": opened, "failed": failed, "held_to_the_end": still,
              "disconnects_seen": nodes.iter().map(|n| n.disconnects.load(SeqCst)).sum::<u64>()}),
    )
}

async fn knock(o: &Opts) -> Result<Value> {
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(o.concurrency));
    let mut tasks = Vec::new();
    for _ in 0..o.count {
        let permit = sem.clone().acquire_owned().await?;
        let mut cfg = NetConfig::new(
            Keypair::generate_ed25519(),
            o.run_id.clone(),
            Role::Worker {
                subscribe_deltas: false,
            },
        );
        cfg.listen = Vec::new();
        cfg.psk = o.swarm_key.as_ref().map(hearth_net::SwarmKey::to_bytes);
        let addr = o.coordinator.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let (net, events) = hearth_net::spawn(cfg)?;
            drain(net.clone(), events, Arc::new(AtomicU64::new(0)));
            // The transport's 10 s upgrade timeout bounds a dial; this one bounds the rest.
            let dialed = tokio::time::timeout(Duration::from_secs(20), net.dial(addr)).await;
            net.shutdown().await;
            drop(permit);
            anyhow::Ok((matches!(dialed, Ok(Ok(_))), t.elapsed().as_secs_f64()))
        }));
    }
    let (mut opened, mut failed, mut slowest) = (0u64, 0u64, 0f64);
    for t in tasks {
        match t.await? {
            Ok((true, secs)) => {
                opened += 1;
                slowest = slowest.max(secs);
            }
            Ok((false, secs)) => {
                failed += 1;
                slowest = slowest.max(secs);
            }
            Err(_) => failed += 1,
        }
    }
    Ok(json!({"mode": "knock", "opened": opened, "failed": failed,
              "slowest_dial_seconds": slowest, "seconds": started.elapsed().as_secs_f64()}))
}

async fn unadmitted(o: &Opts) -> Result<Value> {
    let n = node(o, false, false).await?;
    let join = match join(&n, o).await {
        Ok(_) => "accepted".to_string(),
        Err(e) => e.to_string(),
    };
    let blob = match o.cid {
        Some(cid) => {
            let req = encode(&BlobRequest {
                cid,
                offset: 0,
                max_len: 4096,
            });
            match n.net.request(o.peer, Protocol::Blob, req).await {
                Ok(b) => match BlobResponse::from_bytes(&b)? {
                    BlobResponse::NotFound { .. } => "not_found".to_string(),
                    BlobResponse::Chunk { data, .. } => format!("served {} bytes", data.len()),
                },
                Err(e) => e.to_string(),
            }
        }
        None => "no cid given".into(),
    };
    let direct = {
        let bytes = delta(&n.key, None, &o.run_id, 0, None, 1)?;
        match n.net.request(o.peer, Protocol::Delta, bytes).await {
            Ok(b) => match DeltaAck::from_bytes(&b)? {
                DeltaAck::Accepted { .. } => "accepted".to_string(),
                DeltaAck::Rejected { reason } => reason,
                DeltaAck::Banned { reason } => format!("banned: {reason}"),
            },
            Err(e) => e.to_string(),
        }
    };
    let mut gossiped = 0;
    for i in 0..o.count {
        let bytes = delta(&n.key, None, &o.run_id, 0, None, i as u64 + 2)?;
        if n.net.publish(Topic::Deltas, bytes).await.is_ok() {
            gossiped += 1;
        }
    }
    Ok(
        json!({"mode": "unadmitted", "peer": n.key.public().to_peer_id().to_base58(),
              "join": join, "blob": blob, "direct_delta": direct, "gossiped": gossiped}),
    )
}

#[tokio::main]
async fn main() {
    let result = async {
        let o = parse()?;
        match o.mode.as_str() {
            "flood-gossip" => flood_gossip(&o).await,
            "flood-rr" => flood_rr(&o).await,
            "oversized" => oversized(&o).await,
            "connections" => connections(&o).await,
            "unadmitted" => unadmitted(&o).await,
            "knock" => knock(&o).await,
            m => Err(anyhow!("unknown mode {m}")),
        }
    }
    .await;
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            eprintln!("hearth-hostile: {e:#}");
            std::process::exit(1);
        }
    }
}
