//! Keeping a worker connected to its coordinator: a lost connection is redialed at once, then with a
//! backoff that grows only while the coordinator stays away and starts over at every outage.

use std::time::Duration;

use hearth_net::{Client, Multiaddr, NetError};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// First wait after a failed redial.
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Longest wait between redials: a restarted coordinator is found within this of its coming back.
// A 10 s cap left a worker behind for the rest of tests/chaos.rs's run (issue 19, item 7).
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a dial that succeeded may take to show up as a connection event.
const CONNECT_EVENT_WAIT: Duration = Duration::from_secs(2);

/// The waits between the redials of one outage: 250 ms, doubling up to [`MAX_BACKOFF`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_DELAY }
    }
}

impl Backoff {
    /// The wait before the next redial; each call doubles the following one, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d
    }
}

/// Redials `coordinator` whenever `connected` turns false (also before the first connection),
/// until the network stops. `private` adds the swarm-key hint to the first failure of an outage.
pub fn spawn_redialer(
    net: Client,
    coordinator: Multiaddr,
    mut connected: watch::Receiver<bool>,
    private: bool,
) {
    tokio::spawn(async move {
        loop {
            if connected.wait_for(|c| !*c).await.is_err() {
                return;
            }
            match redial(&net, &coordinator, &mut connected, private).await {
                Ok(true) => info!("connected to the coordinator again"),
                Ok(false) => {}
                Err(()) => return,
            }
        }
    });
}

/// One outage: dial at once, then after each backoff wait, until connected. Ok(whether a failure
/// was reported), or Err when the network stopped.
async fn redial(
    net: &Client,
    coordinator: &Multiaddr,
    connected: &mut watch::Receiver<bool>,
    private: bool,
) -> Result<bool, ()> {
    let mut backoff = Backoff::default();
    let mut reported = false;
    loop {
        if *connected.borrow() {
            return Ok(reported);
        }
        match net.dial(coordinator.clone()).await {
            Ok(_) => {
                // The connection event may trail the dial's answer.
                let waited =
                    tokio::time::timeout(CONNECT_EVENT_WAIT, connected.wait_for(|c| *c)).await;
                if let Ok(Err(_)) = waited {
                    return Err(());
                }
            }
            Err(NetError::Stopped) => return Err(()),
            Err(e) if !reported => {
                reported = true;
                // In a private swarm a wrong or missing key looks like a plain connection failure.
                let hint = if private {
                    "; this is a private swarm: check that --swarm-key is the organiser's key"
                } else {
                    ""
                };
                warn!(
                    "cannot reach the coordinator ({e}){hint}; retrying in the background (up to every {} s)",
                    MAX_BACKOFF.as_secs()
                );
            }
            Err(e) => debug!("cannot reach the coordinator ({e}); retrying"),
        }
        if *connected.borrow() {
            return Ok(reported);
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            r = connected.wait_for(|c| *c) => if r.is_err() { return Err(()) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_net::{Event, NetConfig, Role};
    use std::time::Instant;

    #[test]
    fn backoff_grows_to_the_cap_and_starts_over_each_outage() {
        let mut b = Backoff::default();
        let waits: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 1000, 1000]);
        assert_eq!(Backoff::default().next_delay(), FIRST_DELAY);
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0)
    }

    fn node(
        key: &hearth_net::Keypair,
        role: Role,
        port: Option<u16>,
    ) -> (Client, tokio::sync::mpsc::Receiver<Event>) {
        let mut cfg = NetConfig::new(key.clone(), "redial-test", role);
        cfg.listen = port
            .map(|p| vec![format!("/ip4/127.0.0.1/tcp/{p}").parse().unwrap()])
            .unwrap_or_default();
        hearth_net::spawn(cfg).unwrap()
    }

    /// Forwards the coordinator's connection events into `connected`, as the session's pump does.
    fn pump(
        mut events: tokio::sync::mpsc::Receiver<Event>,
        coordinator: hearth_net::PeerId,
        connected: watch::Sender<bool>,
    ) {
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    Event::PeerConnected(p) if p == coordinator => {
                        let _ = connected.send(true);
                    }
                    Event::PeerDisconnected(p) if p == coordinator => {
                        let _ = connected.send(false);
                    }
                    _ => {}
                }
            }
        });
    }

    #[tokio::test]
    async fn a_restarted_coordinator_is_redialed_within_about_a_second() {
        let port = free_port();
        let ckey = hearth_net::Keypair::generate_ed25519();
        let cid = ckey.public().to_peer_id();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{cid}")
            .parse()
            .unwrap();
        let (coord, _cev) = node(&ckey, Role::Coordinator, Some(port));
        coord.listen_addrs().await;

        let wkey = hearth_net::Keypair::generate_ed25519();
        let (worker, wev) = node(
            &wkey,
            Role::Worker {
                subscribe_deltas: false,
            },
            None,
        );
        let (tx, mut rx) = watch::channel(false);
        pump(wev, cid, tx);
        spawn_redialer(worker.clone(), addr, rx.clone(), false);
        let wait = Duration::from_secs(10);
        tokio::time::timeout(wait, rx.wait_for(|c| *c))
            .await
            .unwrap()
            .unwrap();

        // The coordinator goes away long enough for the backoff to reach its cap (a 10 s cap would
        // be waiting 4 s at this point, so the bound below would fail).
        coord.shutdown().await;
        drop(_cev);
        tokio::time::timeout(wait, rx.wait_for(|c| !*c))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;

        // It comes back at the same address with the same identity.
        let (coord2, _cev2) = node(&ckey, Role::Coordinator, Some(port));
        coord2.listen_addrs().await;
        let back = Instant::now();
        tokio::time::timeout(wait, rx.wait_for(|c| *c))
            .await
            .unwrap()
            .unwrap();
        let took = back.elapsed();
        println!("reconnected {took:?} after the coordinator came back");
        assert!(
            took <= MAX_BACKOFF + Duration::from_millis(700),
            "reconnected {took:?} after the coordinator came back"
        );
        worker.shutdown().await;
        coord2.shutdown().await;
    }
}
