//! The two-pool journey's players: pairs who log in through the lobby (route 2), queue for a match of their
//! own (route 11, one mode per pair, so the two are matched with each other), get the match push (route 12,
//! naming the battle node) and play it: turn by turn a move (route 13) whose push (route 14) must reach the
//! opponent. After a few moves both log out (route 7: the match ends and the battle node releases them),
//! log in again and queue: a steady stream of new matches while other matches keep running, so a draining
//! battle node empties within seconds.
//!
//! Every request is counted in the current phase of the duels' own [`Shared`] (its gates are the two-pool
//! cluster's), with the load's rules ([`load::counted_request`]); a push that does not come within
//! [`PUSH_DEADLINE`] counts as a failure too. After a failure the pair starts over on new connections.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_client::{Client, Push};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::load::{self, LOGIN, LOGOUT, Outcome, Shared};

const QUEUE: i32 = 11;
const MATCHED: i32 = 12;
const MOVE: i32 = 13;
const MOVED: i32 = 14;
/// How long a player waits for a push (the match, or the opponent's move).
pub(crate) const PUSH_DEADLINE: Duration = Duration::from_secs(3);

/// One match, as its players saw it.
#[derive(Debug, Clone)]
pub(crate) struct MatchRecord {
    pub(crate) pair: usize,
    /// The battle node the match push named.
    pub(crate) node: String,
    /// When the second player's queue request (the one that completes the pair) was sent.
    pub(crate) queued: Instant,
    /// When the players logged out (`None` while it runs).
    pub(crate) ended: Option<Instant>,
}

/// One player's connection and its pushes.
struct Seat {
    uid: i64,
    client: Client,
    gate: String,
    pushes: mpsc::Receiver<Push>,
}

impl Seat {
    /// Connects to a ready gate and logs in (the lobby answers).
    async fn open(shared: &Shared, uid: i64) -> Result<Seat, String> {
        let (client, gate, _) = load::connect(shared).await?;
        let pushes = client.pushes().ok_or("pushes taken")?;
        let seat = Seat {
            uid,
            client,
            gate,
            pushes,
        };
        seat.login(shared).await?;
        Ok(seat)
    }

    async fn request(&self, shared: &Shared, route: i32, payload: &Value) -> Result<Value, String> {
        let outcome = load::counted_request(shared, &self.client, route, payload, || {
            format!("uid {} via {}", self.uid, self.gate)
        })
        .await;
        match outcome {
            Outcome::Ok(reply) => Ok(reply),
            Outcome::Failed(why) | Outcome::Interrupted(why) => Err(why),
        }
    }

    async fn login(&self, shared: &Shared) -> Result<(), String> {
        let payload = json!({"uid": self.uid, "name": format!("duelist-{}", self.uid)});
        let reply = self.request(shared, LOGIN, &payload).await?;
        if reply["uid"] != self.uid {
            shared
                .phase()
                .fail(LOGIN, format!("uid {}: login answered {reply}", self.uid));
            return Err(format!("login answered {reply}"));
        }
        shared.phase().logins.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The next push of `route` (others are skipped), within [`PUSH_DEADLINE`]; a missing one is a
    /// failure of the phase.
    async fn push(&mut self, shared: &Shared, route: i32) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + PUSH_DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.pushes.recv()).await {
                Ok(Some(push)) if push.route == route => {
                    shared.phase().pushes.fetch_add(1, Ordering::Relaxed);
                    return serde_json::from_slice(&push.payload)
                        .map_err(|error| format!("push {route}: {error}"));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    let why = format!(
                        "uid {} via {}: no push {route} within {PUSH_DEADLINE:?}",
                        self.uid, self.gate
                    );
                    shared.phase().fail(route, why.clone());
                    return Err(why);
                }
            }
        }
    }
}

/// The pairs and their tasks.
pub(crate) struct Duels {
    pub(crate) shared: Arc<Shared>,
    matches: Arc<Mutex<Vec<MatchRecord>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Duels {
    /// Starts `pairs` pairs (uids from `first_uid`) connecting through `entrances` (the gate Service's
    /// addresses), counting in phase `phase` first. Each match lasts `moves` moves, one every `pace`.
    pub(crate) fn start(
        entrances: &[std::net::SocketAddrV4],
        phase: &str,
        pairs: usize,
        first_uid: i64,
        moves: i64,
        pace: Duration,
    ) -> Duels {
        let shared = Shared::new(pace);
        shared.set_entrances(entrances);
        shared.begin_phase(phase);
        let matches: Arc<Mutex<Vec<MatchRecord>>> = Arc::default();
        let tasks = (0..pairs)
            .map(|pair| {
                let first = first_uid + 2 * pair as i64;
                let (shared, matches) = (shared.clone(), matches.clone());
                tokio::spawn(async move {
                    let mut duel = Duel {
                        pair,
                        uids: [first, first + 1],
                        shared,
                        matches,
                        moves,
                        pace,
                    };
                    duel.run().await;
                })
            })
            .collect();
        Duels {
            shared,
            matches,
            tasks,
        }
    }

    /// Every match so far.
    pub(crate) fn matches(&self) -> Vec<MatchRecord> {
        self.matches.lock().expect("matches").clone()
    }

    /// Matches started after `since`, by battle node.
    pub(crate) fn started_since(&self, since: Instant) -> BTreeMap<String, usize> {
        self.matches()
            .iter()
            .filter(|m| m.queued >= since)
            .fold(BTreeMap::new(), |mut acc, m| {
                *acc.entry(m.node.clone()).or_default() += 1;
                acc
            })
    }

    /// Matches running now, by battle node.
    pub(crate) fn running(&self) -> BTreeMap<String, usize> {
        self.matches()
            .iter()
            .filter(|m| m.ended.is_none())
            .fold(BTreeMap::new(), |mut acc, m| {
                *acc.entry(m.node.clone()).or_default() += 1;
                acc
            })
    }

    /// Pairs that have played at least one match.
    pub(crate) fn pairs_matched(&self) -> usize {
        let mut pairs: Vec<usize> = self.matches().iter().map(|m| m.pair).collect();
        pairs.sort_unstable();
        pairs.dedup();
        pairs.len()
    }

    /// Stops the load: each pair ends its match (logs out) and leaves. Waits for that, at most 30 s.
    pub(crate) async fn stop(self) {
        self.shared.stop();
        let all = futures_util::future::join_all(self.tasks);
        let finished = tokio::time::timeout(Duration::from_secs(30), all).await;
        assert!(finished.is_ok(), "every pair ends its match within 30 s");
    }
}

/// One pair's loop.
struct Duel {
    pair: usize,
    uids: [i64; 2],
    shared: Arc<Shared>,
    matches: Arc<Mutex<Vec<MatchRecord>>>,
    moves: i64,
    pace: Duration,
}

impl Duel {
    async fn run(&mut self) {
        let mut seats: Option<[Seat; 2]> = None;
        while !self.shared.stopped() {
            let mut pair = match seats.take() {
                Some(pair) => pair,
                None => match self.seat().await {
                    Ok(pair) => pair,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
            };
            match self.play_match(&mut pair).await {
                Ok(()) => seats = Some(pair),
                Err(_) => {
                    // Counted where it failed. Leave as cleanly as possible and start over.
                    for seat in &pair {
                        let _ = seat.request(&self.shared, LOGOUT, &json!({})).await;
                        seat.client.close().await;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        if let Some(pair) = seats {
            for seat in &pair {
                seat.client.close().await;
            }
        }
    }

    async fn seat(&self) -> Result<[Seat; 2], String> {
        let a = Seat::open(&self.shared, self.uids[0]).await?;
        let b = Seat::open(&self.shared, self.uids[1]).await?;
        Ok([a, b])
    }

    /// Queue, match, moves, logout, login again.
    async fn play_match(&self, seats: &mut [Seat; 2]) -> Result<(), String> {
        let shared = &self.shared;
        let mode = json!({"mode": format!("duel-{}", self.pair)});
        seats[0].request(shared, QUEUE, &mode).await?;
        let queued = Instant::now();
        seats[1].request(shared, QUEUE, &mode).await?;
        let first = seats[0].push(shared, MATCHED).await?;
        let second = seats[1].push(shared, MATCHED).await?;
        let mut players: Vec<i64> = first["players"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        players.sort_unstable();
        let node = first["node"].as_str().unwrap_or_default().to_owned();
        if first != second || players != self.uids || node.is_empty() {
            let why = format!("pair {}: match pushes {first} / {second}", self.pair);
            shared.phase().fail(MATCHED, why.clone());
            return Err(why);
        }
        let index = {
            let mut matches = self.matches.lock().expect("matches");
            matches.push(MatchRecord {
                pair: self.pair,
                node,
                queued,
                ended: None,
            });
            matches.len() - 1
        };
        let result = self.moves(seats).await;
        // Logging out ends the match (and releases both players on the battle node).
        let logged_out = async {
            for seat in seats.iter() {
                seat.request(shared, LOGOUT, &json!({})).await?;
            }
            Ok::<(), String>(())
        }
        .await;
        self.matches.lock().expect("matches")[index].ended = Some(Instant::now());
        result?;
        logged_out?;
        for seat in seats.iter() {
            seat.login(shared).await?;
        }
        Ok(())
    }

    /// Turn by turn: a move, and its push to the opponent.
    async fn moves(&self, seats: &mut [Seat; 2]) -> Result<(), String> {
        let shared = &self.shared;
        for turn in 0..self.moves {
            let (mover, other) = if turn % 2 == 0 { (0, 1) } else { (1, 0) };
            let (x, y) = (turn, self.pair as i64);
            seats[mover]
                .request(shared, MOVE, &json!({"x": x, "y": y}))
                .await?;
            let moved = seats[other].push(shared, MOVED).await?;
            let want = json!({"from": seats[mover].uid, "x": x, "y": y});
            if moved != want {
                let why = format!("pair {}: push 14 {moved}, expected {want}", self.pair);
                shared.phase().fail(MOVED, why.clone());
                return Err(why);
            }
            tokio::time::sleep(self.pace).await;
        }
        Ok(())
    }
}
