//! The example game (examples/tictactoe), built by cargo and served behind a real `switchyard gate`: two
//! players over TCP and WebSocket, raw due packets, a whole game to a win, the game's own metric on
//! `/metrics`.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::game::{GameBehindGate, build_workspace_binary};
use support::{Conn, Wire, http_get, metric_sum};
use switchyard_testkit::TempDir;

const LOGIN: i64 = 1;
const PLAY: i64 = 2;
const MARK: i64 = 3;
const START: i64 = 10;
const BOARD: i64 = 11;

/// Plays `cell` as `player` and returns the board push both players then get.
async fn mark(player: &mut Conn, other: &mut Conn, seq: i64, cell: u64) -> Value {
    assert_eq!(player.request(MARK, seq, json!({"cell": cell})).await["code"], 0);
    let board = player.expect_data(BOARD, 0).await;
    assert_eq!(
        other.expect_data(BOARD, 0).await,
        board,
        "both players see the same board"
    );
    board
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_players_play_a_game_through_a_gate() {
    let dir = TempDir::new("example-game");
    let binary = build_workspace_binary("tictactoe", "tictactoe");
    let running = GameBehindGate::start(&binary, &[], dir.path()).await;

    let mut x = Conn::tcp(&running.tcp, Wire::DEFAULT).await;
    let mut o = Conn::ws(&running.ws, Wire::DEFAULT).await;
    assert_eq!(
        x.request(LOGIN, 1, json!({"uid": 1})).await,
        json!({"code": 0, "uid": 1})
    );
    assert_eq!(
        o.request(LOGIN, 1, json!({"uid": 2})).await,
        json!({"code": 0, "uid": 2})
    );
    assert_eq!(
        x.request(LOGIN, 2, json!({"uid": -3})).await["code"],
        1,
        "a bad uid is refused"
    );

    assert_eq!(
        x.request(PLAY, 3, json!({})).await,
        json!({"code": 0, "waiting": true})
    );
    let matched = o.request(PLAY, 2, json!({})).await;
    assert_eq!(matched["mark"], "O");
    assert_eq!(matched["opponent"], 1);
    let start = x.expect_data(START, 0).await;
    assert_eq!(start["mark"], "X");
    assert_eq!(start["opponent"], 2);
    assert_eq!(start["game"], matched["game"]);

    let refused = o.request(MARK, 3, json!({"cell": 4})).await;
    assert_eq!(refused, json!({"code": 1, "error": "not your turn"}));
    let board = mark(&mut x, &mut o, 4, 0).await;
    assert_eq!(board["board"], "X........");
    assert_eq!(board["next"], 2);
    mark(&mut o, &mut x, 5, 3).await;
    mark(&mut x, &mut o, 6, 1).await;
    let taken = o.request(MARK, 7, json!({"cell": 1})).await;
    assert_eq!(taken["error"], "cell already taken");
    mark(&mut o, &mut x, 8, 4).await;
    let end = mark(&mut x, &mut o, 9, 2).await;
    assert_eq!(end["board"], "XXXOO....");
    assert_eq!(end["winner"], 1);
    assert_eq!(end["next"], Value::Null);

    let metrics = http_get(&running.node_admin, "/metrics").await.1;
    assert_eq!(
        metric_sum(&metrics, "tictactoe_games_finished_total", &[]),
        1.0,
        "the game's own metric is served with the node's:\n{metrics}"
    );
    assert!(metrics.contains("switchyard_node_"), "{metrics}");
    x.expect_silence(Duration::from_millis(100)).await;
}
