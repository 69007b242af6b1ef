//! The journey's players: one `switchyard_client::Client` per player, connected through the gate Service
//! (its ClusterIP, or its NodePort on the node's address: kube-proxy picks the gate pod), logged in, and
//! (while the load runs) playing one request every period: echo, whoami, or join + say to its own room
//! (a push back to itself). Every request and its outcome is counted in the current phase.
//!
//! Which gate pod a connection reached is read from the kernel's tables ([`switchyard_e2e::conntrack`]):
//! the test asserts where players are (both gates, the new gates after a rollout), and the Service address
//! alone does not say. Connects are serialised for that, so each new connection is told apart (see
//! `counting.rs`, which also holds the phase counters).
//!
//! Outcomes of a request:
//! - **ok**: an answer with `"code":0` (whoami must also name the player's uid);
//! - **failed**: an error answer, a timeout, or a lost connection that nobody announced;
//! - **interrupted**: the connection failed *after* the server asked the client to reconnect elsewhere
//!   (heartbeat extcode 1: a gate draining, or a node evicting its players at its drain deadline). The
//!   design promises the warning, not that a request already in flight survives the close that follows.
//!
//! A player whose connection is closed, or was asked to reconnect, reconnects through the Service (whose
//! endpoints are the ready gates) and logs in again with the same uid before its next request.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard_client::Client;
use tokio::task::JoinHandle;

pub(crate) use crate::counting::{Outcome, PhaseStats, Shared, connect, counted_request};
pub(crate) use switchyard_testkit::holds_within;

/// Client TCP port of the gates (the CRD's default `gate.tcp.port`).
pub(crate) const GATE_TCP_PORT: u16 = 3553;
const ECHO: i32 = 1;
pub(crate) const LOGIN: i32 = 2;
const WHOAMI: i32 = 3;
const JOIN: i32 = 4;
const SAY: i32 = 5;
const ROOM_MESSAGE: i32 = 6;
pub(crate) const LOGOUT: i32 = 7;
const KICKED: i32 = 8;

/// One push of route 6 as a player received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomMessage {
    pub(crate) room: String,
    pub(crate) from: i64,
    pub(crate) text: String,
}

/// Where and when a login landed.
#[derive(Debug, Clone)]
pub(crate) struct Landing {
    /// When the login request was sent.
    pub(crate) sent: Instant,
    pub(crate) node: String,
    pub(crate) uid: i64,
}

#[derive(Debug)]
struct Session {
    client: Client,
    /// The gate pod (`ip:port`) behind the Service address.
    gate: String,
    reader: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One player.
#[derive(Debug)]
pub(crate) struct Player {
    pub(crate) uid: i64,
    session: tokio::sync::Mutex<Option<Session>>,
    node: Mutex<String>,
    gate: Mutex<String>,
    /// The Service address of its current connection.
    entrance: Mutex<String>,
    messages: Arc<Mutex<VecDeque<RoomMessage>>>,
    /// Skipped by the periodic load while set (scripted steps drive it instead).
    paused: AtomicBool,
    landings: Mutex<Vec<Landing>>,
    tick: AtomicU64,
}

impl Player {
    fn new(uid: i64) -> Player {
        Player {
            uid,
            session: tokio::sync::Mutex::new(None),
            node: Mutex::new(String::new()),
            gate: Mutex::new(String::new()),
            entrance: Mutex::new(String::new()),
            messages: Arc::new(Mutex::new(VecDeque::new())),
            paused: AtomicBool::new(false),
            landings: Mutex::new(Vec::new()),
            tick: AtomicU64::new(u64::try_from(uid).unwrap_or(0)),
        }
    }

    /// The node the player is bound to, as its last login or whoami said.
    pub(crate) fn node(&self) -> String {
        self.node.lock().expect("node").clone()
    }

    /// The gate pod (`ip:port`) of its current connection.
    pub(crate) fn gate(&self) -> String {
        self.gate.lock().expect("gate").clone()
    }

    /// The Service address (ClusterIP or NodePort) its current connection went to.
    pub(crate) fn entrance(&self) -> String {
        self.entrance.lock().expect("entrance").clone()
    }

    pub(crate) fn landings(&self) -> Vec<Landing> {
        self.landings.lock().expect("landings").clone()
    }

    pub(crate) fn messages(&self) -> Vec<RoomMessage> {
        self.messages.lock().expect("messages").iter().cloned().collect()
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    fn solo_room(&self) -> String {
        format!("solo-{}", self.uid)
    }

    /// One request on the open session, counted in the current phase.
    async fn request_on(&self, shared: &Shared, session: &Session, route: i32, payload: &Value) -> Outcome {
        counted_request(shared, &session.client, route, payload, || {
            format!("uid {} via {} (node {})", self.uid, session.gate, self.node())
        })
        .await
    }

    /// Logs in on the session (and joins the player's own room). Returns the node.
    async fn login_on(&self, shared: &Shared, session: &Session) -> Result<String, String> {
        let sent = Instant::now();
        let payload = json!({"uid": self.uid, "name": format!("player-{}", self.uid)});
        let reply = match self.request_on(shared, session, LOGIN, &payload).await {
            Outcome::Ok(reply) => reply,
            Outcome::Failed(why) | Outcome::Interrupted(why) => return Err(why),
        };
        shared.phase().logins.fetch_add(1, Ordering::Relaxed);
        let node = reply["node"].as_str().unwrap_or_default().to_owned();
        if reply["uid"] != self.uid {
            return Err(format!("login answered for another uid: {reply}"));
        }
        self.landings.lock().expect("landings").push(Landing {
            sent,
            node: node.clone(),
            uid: self.uid,
        });
        *self.node.lock().expect("node") = node.clone();
        let room = json!({"room": self.solo_room()});
        match self.request_on(shared, session, JOIN, &room).await {
            Outcome::Ok(_) => Ok(node),
            Outcome::Failed(why) | Outcome::Interrupted(why) => Err(why),
        }
    }

    /// Opens a connection through the gate Service, starting its push reader.
    async fn open(&self, shared: &Arc<Shared>) -> Result<Session, String> {
        let (client, gate, entrance) = connect(shared).await?;
        *self.entrance.lock().expect("entrance") = entrance.to_string();
        let mut pushes = client.pushes().ok_or_else(|| "pushes taken".to_owned())?;
        let reader = {
            let shared = shared.clone();
            let me = self.uid;
            let messages = self.messages.clone();
            tokio::spawn(async move {
                while let Some(push) = pushes.recv().await {
                    let stats = shared.phase();
                    match push.route {
                        ROOM_MESSAGE => {
                            stats.pushes.fetch_add(1, Ordering::Relaxed);
                            if let Ok(value) = serde_json::from_slice::<Value>(&push.payload) {
                                let mut messages = messages.lock().expect("messages");
                                if messages.len() >= 64 {
                                    messages.pop_front();
                                }
                                messages.push_back(RoomMessage {
                                    room: value["room"].as_str().unwrap_or_default().to_owned(),
                                    from: value["from"].as_i64().unwrap_or_default(),
                                    text: value["text"].as_str().unwrap_or_default().to_owned(),
                                });
                            }
                        }
                        KICKED => {
                            stats.kicked.fetch_add(1, Ordering::Relaxed);
                            stats.sample(format!("uid {me}: kicked (duplicate login)"));
                        }
                        _ => {}
                    }
                }
            })
        };
        *self.gate.lock().expect("gate") = gate.clone();
        Ok(Session { client, gate, reader })
    }

    /// (Re)connects and logs in, trying the ready gates for up to `within`. Returns the node.
    async fn connect(
        &self,
        shared: &Arc<Shared>,
        slot: &mut Option<Session>,
        within: Duration,
    ) -> Result<String, String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < within && !shared.stop.load(Ordering::Relaxed) {
            if let Some(old) = slot.take() {
                old.client.close().await;
            }
            match self.open(shared).await {
                Ok(session) => match self.login_on(shared, &session).await {
                    Ok(node) => {
                        *slot = Some(session);
                        return Ok(node);
                    }
                    Err(why) => {
                        last = why;
                        session.client.close().await;
                    }
                },
                Err(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "uid {}: could not log in within {within:?}: {last}",
            self.uid
        ))
    }
}

impl Player {
    /// One step of the periodic load: reconnect if needed, then echo, whoami, or join + say.
    async fn tick(&self, shared: &Arc<Shared>) {
        let mut slot = self.session.lock().await;
        // Checked again under the lock: a scripted step (a logout) may have run meanwhile.
        if shared.stop.load(Ordering::Relaxed) || self.paused.load(Ordering::Relaxed) {
            return;
        }
        let lost = slot
            .as_ref()
            .is_none_or(|s| s.client.is_closed() || s.client.reconnect_requested());
        if lost {
            self.reconnect(shared, &mut slot).await;
            return;
        }
        let Some(session) = slot.as_ref() else { return };
        let k = self.tick.fetch_add(1, Ordering::Relaxed);
        match k % 3 {
            0 => {
                let message = format!("m{}-{k}", self.uid);
                if let Outcome::Ok(reply) = self
                    .request_on(shared, session, ECHO, &json!({"message": message}))
                    .await
                    && reply["message"] != message.as_str()
                {
                    let stats = shared.phase();
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    stats.sample(format!("uid {}: echo answered {reply}", self.uid));
                }
            }
            1 => {
                if let Outcome::Ok(reply) = self.request_on(shared, session, WHOAMI, &json!({})).await {
                    self.check_whoami(shared, &reply);
                }
            }
            _ => {
                let room = json!({"room": self.solo_room()});
                if let Outcome::Ok(_) = self.request_on(shared, session, JOIN, &room).await {
                    let say = json!({"room": self.solo_room(), "text": format!("t{k}")});
                    self.request_on(shared, session, SAY, &say).await;
                }
            }
        }
    }

    fn check_whoami(&self, shared: &Shared, reply: &Value) {
        let stats = shared.phase();
        if reply["uid"] != self.uid {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            stats.sample(format!("uid {}: whoami answered {reply}", self.uid));
            return;
        }
        let node = reply["node"].as_str().unwrap_or_default().to_owned();
        let mut known = self.node.lock().expect("node");
        if *known != node {
            stats.moved.fetch_add(1, Ordering::Relaxed);
            stats.sample(format!(
                "uid {}: whoami names {node}, was bound to {known}",
                self.uid
            ));
            *known = node;
        }
    }

    async fn reconnect(&self, shared: &Arc<Shared>, slot: &mut Option<Session>) {
        let before = self.node();
        let stats = shared.phase();
        if slot.is_some() {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        match self.connect(shared, slot, Duration::from_secs(30)).await {
            Ok(node) => {
                if !before.is_empty() && node != before {
                    shared.phase().moved.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(why) => {
                let stats = shared.phase();
                stats.failed.fetch_add(1, Ordering::Relaxed);
                stats.sample(why);
            }
        }
    }

    /// Connects (if not connected) and logs in. Returns the node.
    pub(crate) async fn login(&self, shared: &Arc<Shared>) -> Result<String, String> {
        let mut slot = self.session.lock().await;
        match slot.as_ref() {
            Some(session) if !session.client.is_closed() && !session.client.reconnect_requested() => {
                self.login_on(shared, session).await
            }
            _ => self.connect(shared, &mut slot, Duration::from_secs(30)).await,
        }
    }

    /// A scripted request on the current connection (no reconnect).
    pub(crate) async fn call(&self, shared: &Shared, route: i32, payload: &Value) -> Outcome {
        let slot = self.session.lock().await;
        match slot.as_ref() {
            Some(session) => self.request_on(shared, session, route, payload).await,
            None => Outcome::Failed(format!("uid {}: not connected", self.uid)),
        }
    }

    /// Whoami on the current connection: the node that answered.
    pub(crate) async fn whoami(&self, shared: &Shared) -> Result<String, String> {
        match self.call(shared, WHOAMI, &json!({})).await {
            Outcome::Ok(reply) => {
                self.check_whoami(shared, &reply);
                Ok(reply["node"].as_str().unwrap_or_default().to_owned())
            }
            Outcome::Failed(why) | Outcome::Interrupted(why) => Err(why),
        }
    }

    /// Joins `room` (on the player's node).
    pub(crate) async fn join(&self, shared: &Shared, room: &str) -> Result<i64, String> {
        match self.call(shared, JOIN, &json!({"room": room})).await {
            Outcome::Ok(reply) => Ok(reply["members"].as_i64().unwrap_or_default()),
            Outcome::Failed(why) | Outcome::Interrupted(why) => Err(why),
        }
    }

    /// Says `text` in `room`; every member gets push 6.
    pub(crate) async fn say(&self, shared: &Shared, room: &str, text: &str) -> Result<(), String> {
        match self.call(shared, SAY, &json!({"room": room, "text": text})).await {
            Outcome::Ok(_) => Ok(()),
            Outcome::Failed(why) | Outcome::Interrupted(why) => Err(why),
        }
    }

    /// Logs out: the node releases the player; the connection stays open (and idle: the player is
    /// paused until it logs in again).
    pub(crate) async fn logout(&self, shared: &Shared) -> Result<(), String> {
        let slot = self.session.lock().await;
        self.logout_on(shared, slot.as_ref()).await
    }

    async fn logout_on(&self, shared: &Shared, session: Option<&Session>) -> Result<(), String> {
        let Some(session) = session else {
            return Err(format!("uid {}: not connected", self.uid));
        };
        match self.request_on(shared, session, LOGOUT, &json!({})).await {
            Outcome::Ok(_) => {
                self.node.lock().expect("node").clear();
                self.set_paused(true);
                Ok(())
            }
            Outcome::Failed(why) | Outcome::Interrupted(why) => Err(why),
        }
    }

    /// Logs out and logs in again on the same connection (one step: the periodic load cannot come in
    /// between): the player lands on a node that takes new players. Returns the new node.
    pub(crate) async fn logout_and_login(&self, shared: &Arc<Shared>) -> Result<String, String> {
        let slot = self.session.lock().await;
        self.logout_on(shared, slot.as_ref()).await?;
        let session = slot.as_ref().ok_or("not connected")?;
        let node = self.login_on(shared, session).await;
        // On a failure the periodic load reconnects and logs in.
        self.set_paused(false);
        node
    }

    /// Closes the connection and logs in again on a new one (to the next ready gate). Returns the node.
    pub(crate) async fn reconnect_now(&self, shared: &Arc<Shared>) -> Result<String, String> {
        let mut slot = self.session.lock().await;
        self.connect(shared, &mut slot, Duration::from_secs(30)).await
    }
}

/// Every player, the load tasks, and the phase counters.
#[derive(Debug)]
pub(crate) struct Swarm {
    pub(crate) shared: Arc<Shared>,
    players: Vec<Arc<Player>>,
    tasks: Vec<JoinHandle<()>>,
    next_uid: i64,
}

impl Swarm {
    /// An empty swarm whose players will make one request every `period` while the load runs.
    pub(crate) fn new(period: Duration) -> Swarm {
        Swarm {
            shared: Shared::new(period),
            players: Vec::new(),
            tasks: Vec::new(),
            next_uid: 1000,
        }
    }

    pub(crate) fn set_entrances(&self, entrances: &[SocketAddrV4]) {
        self.shared.set_entrances(entrances);
    }

    /// Ends the current phase and starts counting `name`.
    pub(crate) fn phase(&self, name: &str) -> Arc<PhaseStats> {
        self.shared.begin_phase(name)
    }

    /// Every phase so far (the first is the unnamed setup).
    pub(crate) fn phases(&self) -> Vec<Arc<PhaseStats>> {
        self.shared.phases()
    }

    pub(crate) fn players(&self) -> &[Arc<Player>] {
        &self.players
    }

    /// Adds `n` players with new uids, each with its load task (idle until the load runs).
    pub(crate) fn add_players(&mut self, n: usize) -> Vec<Arc<Player>> {
        let mut added = Vec::with_capacity(n);
        for _ in 0..n {
            let player = Arc::new(Player::new(self.next_uid));
            self.next_uid += 1;
            let shared = self.shared.clone();
            let me = player.clone();
            let offset = Duration::from_millis(
                u64::try_from(me.uid).unwrap_or(0) * 37
                    % u64::try_from(shared.period.as_millis()).unwrap_or(1000),
            );
            self.tasks.push(tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let mut interval = tokio::time::interval(shared.period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !shared.stop.load(Ordering::Relaxed) {
                    interval.tick().await;
                    if shared.running.load(Ordering::Relaxed) && !me.paused.load(Ordering::Relaxed) {
                        me.tick(&shared).await;
                    }
                }
            }));
            self.players.push(player.clone());
            added.push(player);
        }
        added
    }

    /// Logs every one of `players` in (50 at a time). Returns the failures.
    pub(crate) async fn login(&self, players: &[Arc<Player>]) -> Vec<String> {
        let mut failures = Vec::new();
        for chunk in players.chunks(50) {
            let results = futures_util::future::join_all(chunk.iter().map(|p| p.login(&self.shared))).await;
            failures.extend(results.into_iter().filter_map(Result::err));
        }
        failures
    }

    /// Starts or pauses the periodic load.
    pub(crate) fn set_running(&self, running: bool) {
        self.shared.running.store(running, Ordering::Relaxed);
    }

    /// The players grouped by the node they are bound to.
    pub(crate) fn by_node(&self) -> HashMap<String, Vec<Arc<Player>>> {
        let mut map: HashMap<String, Vec<Arc<Player>>> = HashMap::new();
        for player in &self.players {
            map.entry(player.node()).or_default().push(player.clone());
        }
        map
    }

    /// Every login so far, in no particular order.
    pub(crate) fn landings(&self) -> Vec<Landing> {
        self.players.iter().flat_map(|p| p.landings()).collect()
    }

    /// Stops the load and closes every connection.
    pub(crate) async fn stop(self) {
        self.shared.stop();
        for task in &self.tasks {
            task.abort();
        }
        for player in &self.players {
            if let Some(session) = player.session.lock().await.take() {
                session.client.close().await;
            }
        }
    }
}
