//! The journey's counting: the counters of one phase ([`PhaseStats`]), what a swarm of players shares
//! ([`Shared`]: the gate Service's addresses, the current phase), and one request counted by its outcome
//! ([`counted_request`]); plus connecting through the gate Service and telling which gate pod the
//! connection reached ([`connect`], see `load.rs`).
//!
//! Outcomes of a request:
//! - **ok**: an answer with `"code":0`;
//! - **failed**: an error answer, a timeout, or a lost connection that nobody announced;
//! - **interrupted**: the connection failed *after* the server asked the client to reconnect elsewhere
//!   (heartbeat extcode 1: a gate draining, or a node evicting its players at its drain deadline).

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_client::{Client, ClientOptions, PacketConfig};
use switchyard_e2e::conntrack;

/// Counters of one phase of the journey.
#[derive(Debug, Default)]
pub(crate) struct PhaseStats {
    pub(crate) name: String,
    pub(crate) requests: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) interrupted: AtomicU64,
    pub(crate) logins: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) pushes: AtomicU64,
    pub(crate) kicked: AtomicU64,
    /// whoami or a re-login named another node than the one the player was bound to.
    pub(crate) moved: AtomicU64,
    /// Failed requests by route.
    pub(crate) failed_routes: Mutex<BTreeMap<i32, u64>>,
    /// The first failures, for the report.
    pub(crate) samples: Mutex<Vec<String>>,
    pub(crate) started: Option<Instant>,
    pub(crate) ended: Mutex<Option<Instant>>,
}

impl PhaseStats {
    fn new(name: &str) -> PhaseStats {
        PhaseStats {
            name: name.to_owned(),
            started: Some(Instant::now()),
            ..PhaseStats::default()
        }
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn sample(&self, what: String) {
        let mut samples = self.samples.lock().expect("samples");
        if samples.len() < 12 {
            samples.push(what);
        }
    }

    /// `requests=… failed=… …` for the step log.
    pub(crate) fn line(&self) -> String {
        format!(
            "requests {} failed {} interrupted {} logins {} reconnects {} pushes {} moved {}",
            Self::get(&self.requests),
            Self::get(&self.failed),
            Self::get(&self.interrupted),
            Self::get(&self.logins),
            Self::get(&self.reconnects),
            Self::get(&self.pushes),
            Self::get(&self.moved),
        )
    }

    /// Counts a failure of `route` (a request, or a push that never came) and keeps a sample.
    pub(crate) fn fail(&self, route: i32, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self
            .failed_routes
            .lock()
            .expect("failed routes")
            .entry(route)
            .or_default() += 1;
        self.sample(why);
    }

    pub(crate) fn failed_routes(&self) -> BTreeMap<i32, u64> {
        self.failed_routes.lock().expect("failed routes").clone()
    }

    pub(crate) fn samples(&self) -> Vec<String> {
        self.samples.lock().expect("samples").clone()
    }

    pub(crate) fn duration(&self) -> Duration {
        let end = self.ended.lock().expect("ended").unwrap_or_else(Instant::now);
        self.started.map(|s| end - s).unwrap_or_default()
    }
}

/// What the whole swarm shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The gate Service's addresses new connections go to, in turn (its ClusterIP, its NodePort).
    entrances: RwLock<Vec<SocketAddrV4>>,
    cursor: AtomicUsize,
    /// Held from just before a connect until its gate pod is known (see the module's doc).
    connecting: tokio::sync::Mutex<()>,
    phase: RwLock<Arc<PhaseStats>>,
    phases: Mutex<Vec<Arc<PhaseStats>>>,
    /// The periodic load runs (players keep their connections either way).
    pub(crate) running: AtomicBool,
    pub(crate) stop: AtomicBool,
    pub(crate) period: Duration,
}

impl Shared {
    /// Shared state for players who make one request every `period` while the load runs; counting in an
    /// unnamed setup phase until the first [`Shared::begin_phase`].
    pub(crate) fn new(period: Duration) -> Arc<Shared> {
        let first = Arc::new(PhaseStats::new("setup"));
        Arc::new(Shared {
            entrances: RwLock::new(Vec::new()),
            cursor: AtomicUsize::new(0),
            connecting: tokio::sync::Mutex::new(()),
            phase: RwLock::new(first.clone()),
            phases: Mutex::new(vec![first]),
            running: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            period,
        })
    }

    pub(crate) fn phase(&self) -> Arc<PhaseStats> {
        self.phase.read().expect("phase").clone()
    }

    /// Ends the current phase and starts counting `name`.
    pub(crate) fn begin_phase(&self, name: &str) -> Arc<PhaseStats> {
        let next = Arc::new(PhaseStats::new(name));
        let previous = std::mem::replace(&mut *self.phase.write().expect("phase"), next.clone());
        *previous.ended.lock().expect("ended") = Some(Instant::now());
        self.phases.lock().expect("phases").push(next.clone());
        next
    }

    /// Every phase so far (the first is the unnamed setup).
    pub(crate) fn phases(&self) -> Vec<Arc<PhaseStats>> {
        self.phases.lock().expect("phases").clone()
    }

    /// Ends the load: players stop at their next step, and the current phase ends.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.running.store(false, Ordering::Relaxed);
        *self.phase().ended.lock().expect("ended") = Some(Instant::now());
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The gate Service's addresses new connections go to (in turn).
    pub(crate) fn set_entrances(&self, entrances: &[SocketAddrV4]) {
        *self.entrances.write().expect("entrances") = entrances.to_vec();
    }

    fn next_entrance(&self) -> Option<SocketAddrV4> {
        let entrances = self.entrances.read().expect("entrances");
        if entrances.is_empty() {
            return None;
        }
        let i = self.cursor.fetch_add(1, Ordering::Relaxed);
        Some(entrances[i % entrances.len()])
    }
}

/// What a request came back as.
#[derive(Debug)]
pub(crate) enum Outcome {
    Ok(Value),
    Failed(String),
    Interrupted(String),
}

fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(3),
        heartbeat_interval: Some(Duration::from_secs(3)),
        ..ClientOptions::default()
    }
}

/// Connects through the next Service address. Returns the client, the gate pod it reached (`ip:port`, from
/// kube-proxy's translation of the connection) and the Service address.
pub(crate) async fn connect(shared: &Shared) -> Result<(Client, String, SocketAddrV4), String> {
    let entrance = shared
        .next_entrance()
        .ok_or_else(|| "no gate Service address yet".to_owned())?;
    // One connect at a time: the one new established connection to the address is this one.
    let _one = shared.connecting.lock().await;
    let before = conntrack::established_ports(entrance);
    let options = ClientOptions {
        // Short: the lock is held meanwhile (the player's reconnect loop retries).
        connect_timeout: Duration::from_secs(1),
        ..options()
    };
    let client = Client::connect_tcp(entrance, PacketConfig::default(), options)
        .await
        .map_err(|error| format!("connect {entrance}: {error}"))?;
    let new: Vec<u16> = conntrack::established_ports(entrance)
        .difference(&before)
        .copied()
        .collect();
    let gate = match new.as_slice() {
        [port] => conntrack::backend(*port, entrance).map(|pod| pod.to_string()),
        _ => None,
    };
    let Some(gate) = gate else {
        client.close().await;
        return Err(format!(
            "connect {entrance}: cannot tell which gate pod it reached (new local ports {new:?})"
        ));
    };
    Ok((client, gate, entrance))
}

/// One request on `client`, counted in `shared`'s current phase: ok (`"code":0`), failed (an error answer, a
/// timeout, a lost connection), or interrupted (lost after the server asked the client to reconnect
/// elsewhere). `who` names the player in a failure's sample.
pub(crate) async fn counted_request(
    shared: &Shared,
    client: &Client,
    route: i32,
    payload: &Value,
    who: impl FnOnce() -> String,
) -> Outcome {
    let stats = shared.phase();
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let body = serde_json::to_vec(payload).expect("json");
    let outcome = match client.request(route, body).await {
        Ok(reply) => match serde_json::from_slice::<Value>(&reply) {
            Ok(value) if value["code"] == 0 => Outcome::Ok(value),
            Ok(value) => Outcome::Failed(format!("route {route}: error answer {value}")),
            Err(error) => Outcome::Failed(format!("route {route}: unreadable answer: {error}")),
        },
        Err(error) if client.reconnect_requested() => {
            Outcome::Interrupted(format!("route {route}: {error} (after reconnect-elsewhere)"))
        }
        Err(error) => Outcome::Failed(format!("route {route}: {error}")),
    };
    match &outcome {
        Outcome::Ok(_) => {}
        Outcome::Failed(why) => stats.fail(route, format!("{}: {why}", who())),
        Outcome::Interrupted(_) => {
            stats.interrupted.fetch_add(1, Ordering::Relaxed);
        }
    }
    outcome
}
