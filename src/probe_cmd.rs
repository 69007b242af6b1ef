//! `switchyard probe-login`: logs one player in through a gate and exits 0 when the game answers the login,
//! non-zero (with the reason) when it does not. It is what the chart's `helm test` pod runs (the image has
//! no shell, so the check is a subcommand of the one binary), and it works from any host that reaches a
//! gate: `switchyard probe-login --addr HOST:3553`.
//!
//! The login is the demo game's (route 2, `{"uid": N, "name": "..."}`, answered with `{"code": 0, "uid":
//! N}`); a game with another login route sets `--login-route`. Connecting is retried until `--wait`
//! passes: right after a GameCluster turns Ready, the Service's DNS name or its proxy rules may lag.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};
use switchyard_client::{Client, ClientOptions, PacketConfig};
use switchyard_cluster::process::parse_duration;

/// Flags of `switchyard probe-login`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ProbeArgs {
    /// The gate's client TCP address, host:port (e.g. my-game-gate.game.svc:3553).
    #[arg(long, env = "SWITCHYARD_PROBE_ADDR")]
    pub(crate) addr: String,
    /// The uid of the player to log in (a positive integer no real player uses).
    #[arg(long, env = "SWITCHYARD_PROBE_UID", default_value_t = 999_000_001)]
    pub(crate) uid: i64,
    /// The player's name in the login request.
    #[arg(long, env = "SWITCHYARD_PROBE_NAME", default_value = "probe-login")]
    pub(crate) name: String,
    /// The game's login route.
    #[arg(long, env = "SWITCHYARD_PROBE_LOGIN_ROUTE", default_value_t = 2)]
    pub(crate) login_route: i32,
    /// How long to keep trying (connect and login) before giving up.
    #[arg(long, env = "SWITCHYARD_PROBE_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub(crate) wait: Duration,
    /// How long one attempt (connect, then the login's answer) may take.
    #[arg(long, env = "SWITCHYARD_PROBE_ATTEMPT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub(crate) attempt_timeout: Duration,
}

/// Why a login attempt did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    /// The gate could not be reached, or did not answer in time.
    #[error("no answer from the gate at {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: switchyard_client::ClientError,
    },
    /// The game answered, but not with a successful login of this uid.
    #[error("the login of uid {uid} was refused or garbled: {reply}")]
    Refused { uid: i64, reply: String },
}

/// A successful login: which node took the player, when the game says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LoginOk {
    pub(crate) node: Option<String>,
}

/// The login request's payload.
pub(crate) fn login_request(uid: i64, name: &str) -> Vec<u8> {
    json!({"uid": uid, "name": name}).to_string().into_bytes()
}

/// Checks a login answer: JSON with `code` 0 and the same `uid`.
///
/// # Errors
/// [`ProbeError::Refused`] with the answer (cut to 200 bytes) otherwise.
pub(crate) fn check_login_reply(uid: i64, reply: &[u8]) -> Result<LoginOk, ProbeError> {
    let refused = || ProbeError::Refused {
        uid,
        reply: String::from_utf8_lossy(&reply[..reply.len().min(200)]).into_owned(),
    };
    let value: Value = serde_json::from_slice(reply).map_err(|_| refused())?;
    if value["code"].as_i64() != Some(0) || value["uid"].as_i64() != Some(uid) {
        return Err(refused());
    }
    Ok(LoginOk {
        node: value["node"].as_str().map(str::to_owned),
    })
}

async fn attempt(args: &ProbeArgs) -> Result<LoginOk, ProbeError> {
    let unreachable = |source| ProbeError::Unreachable {
        addr: args.addr.clone(),
        source,
    };
    let options = ClientOptions {
        connect_timeout: args.attempt_timeout,
        request_timeout: args.attempt_timeout,
        ..ClientOptions::default()
    };
    let client = Client::connect_tcp(args.addr.as_str(), PacketConfig::default(), options)
        .await
        .map_err(unreachable)?;
    let reply = client
        .request(args.login_route, login_request(args.uid, &args.name))
        .await
        .map_err(unreachable)?;
    check_login_reply(args.uid, &reply)
}

/// Tries until a login succeeds or `--wait` passes; a refused login ends the probe at once (retrying would
/// not change the game's mind).
pub(crate) async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match attempt(&args).await {
            Ok(ok) => {
                println!(
                    "login ok: uid {} through {} (node {}) after {attempts} attempt(s), {:.1}s",
                    args.uid,
                    args.addr,
                    ok.node.as_deref().unwrap_or("unnamed"),
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Err(error @ ProbeError::Refused { .. }) => return Err(error.into()),
            Err(error) if started.elapsed() >= args.wait => {
                anyhow::bail!("{error} (gave up after {attempts} attempt(s) in {:?})", args.wait)
            }
            Err(error) => {
                eprintln!("attempt {attempts}: {error}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_answer_must_carry_code_zero_and_the_uid() {
        assert_eq!(
            check_login_reply(7, br#"{"code":0,"uid":7,"node":"node-a"}"#).ok(),
            Some(LoginOk {
                node: Some("node-a".into())
            })
        );
        assert_eq!(
            check_login_reply(7, br#"{"code":0,"uid":7}"#).ok(),
            Some(LoginOk { node: None })
        );
        for refused in [
            &br#"{"code":400,"message":"uid must be a positive integer"}"#[..],
            br#"{"code":0,"uid":8}"#,
            br#"{"uid":7}"#,
            b"not json",
        ] {
            let error = check_login_reply(7, refused).expect_err("refused");
            assert!(error.to_string().contains("uid 7"), "{error}");
        }
        let long = vec![b'x'; 10_000];
        let error = check_login_reply(7, &long).expect_err("refused").to_string();
        assert!(error.len() < 300, "the reply is cut: {error}");
    }

    #[test]
    fn the_request_is_the_demo_login() {
        let request: Value = serde_json::from_slice(&login_request(5, "probe")).expect("json");
        assert_eq!(request, json!({"uid": 5, "name": "probe"}));
    }
}
