//! The game's handlers and its one piece of shared state, the [`Lobby`]: players who want a game wait
//! there until a second one comes, then play on the node that matched them.
//!
//! | route | request → response | pushes |
//! |---|---|---|
//! | 1 login (stateless) | `{"uid": n}` (n > 0) → `{"code":0,"uid":n}` | |
//! | 2 play (stateful) | `{}` → `{"code":0,"waiting":true}` or `{"code":0,"game":g,"mark":"O","opponent":u}` | 10 to the waiting player: `{"game":g,"mark":"X","opponent":u}` |
//! | 3 mark (stateful) | `{"cell": 0..8}` → `{"code":0}` or `{"code":1,"error":...}` | 11 to both: `{"game":g,"board":"X...O....","next":u,"winner":u,"draw":b}` |
//!
//! A player who leaves forfeits: the opponent's next move is answered with `{"code":1,"error":"opponent
//! left","winner":<them>}`. Players are matched on the node that holds them, so one node replica (or a
//! game whose players log in through one node) plays; that is enough for an example.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_node::{Context, Disconnect, HandlerError, HandlerResult, Payload, State, Uid};

use crate::board::{Board, Mark, Outcome};

pub(crate) const LOGIN: i32 = 1;
pub(crate) const PLAY: i32 = 2;
pub(crate) const MARK: i32 = 3;
/// Push: a game starts.
pub(crate) const START: i32 = 10;
/// Push: the board after a move.
pub(crate) const BOARD: i32 = 11;

#[derive(Debug)]
struct Game {
    id: u64,
    board: Board,
    x: Uid,
    o: Uid,
    /// Set when a player left: the other one won.
    forfeited_to: Option<Uid>,
}

impl Game {
    fn mark_of(&self, uid: Uid) -> Mark {
        if uid == self.x { Mark::X } else { Mark::O }
    }

    fn player(&self, mark: Mark) -> Uid {
        match mark {
            Mark::X => self.x,
            Mark::O => self.o,
        }
    }
}

/// Who waits for a game, and the games being played.
#[derive(Debug, Default)]
pub(crate) struct Lobby {
    inner: Mutex<LobbyInner>,
    /// Games played to a win or a draw (served on `/metrics`).
    pub(crate) finished: Counter,
}

#[derive(Debug, Default)]
struct LobbyInner {
    waiting: Option<Uid>,
    games: HashMap<Uid, Arc<Mutex<Game>>>,
    next_game: u64,
}

impl Lobby {
    pub(crate) fn shared() -> Arc<Lobby> {
        Arc::new(Lobby::default())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Login {
    uid: Uid,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Move {
    cell: usize,
}

/// What every route answers: a JSON reply, or a refusal the player sees as `{"code": 1, "error": ...}`.
type Reply = Result<Payload<Value>, HandlerError>;

fn refuse(error: &str) -> Reply {
    Err(HandlerError::new(1, error))
}

pub(crate) async fn login(ctx: Context, Payload(login): Payload<Login>) -> Reply {
    if login.uid <= 0 {
        return refuse("send {\"uid\": n} with n > 0");
    }
    ctx.bind_gate(login.uid).await?;
    ctx.bind_node(login.uid).await?;
    Ok(Payload(json!({"code": 0, "uid": login.uid})))
}

pub(crate) async fn play(ctx: Context, State(lobby): State<Arc<Lobby>>) -> Reply {
    let me = ctx.uid();
    let matched = {
        let mut lobby = lobby.inner.lock();
        if lobby.games.contains_key(&me) {
            None
        } else {
            match lobby.waiting.take() {
                Some(waiting) if waiting != me => {
                    lobby.next_game += 1;
                    let game = Arc::new(Mutex::new(Game {
                        id: lobby.next_game,
                        board: Board::default(),
                        x: waiting,
                        o: me,
                        forfeited_to: None,
                    }));
                    lobby.games.insert(waiting, game.clone());
                    lobby.games.insert(me, game);
                    Some((lobby.next_game, waiting))
                }
                _ => {
                    lobby.waiting = Some(me);
                    None
                }
            }
        }
    };
    match matched {
        Some((game, opponent)) => {
            ctx.push(
                opponent,
                START,
                &json!({"game": game, "mark": "X", "opponent": me}),
            )
            .await?;
            Ok(Payload(
                json!({"code": 0, "game": game, "mark": "O", "opponent": opponent}),
            ))
        }
        None if lobby.inner.lock().games.contains_key(&me) => refuse("already in a game"),
        None => Ok(Payload(json!({"code": 0, "waiting": true}))),
    }
}

/// Answers before it pushes the board, so the mover reads the answer first: it responds itself.
pub(crate) async fn mark(
    ctx: Context,
    State(lobby): State<Arc<Lobby>>,
    Payload(request): Payload<Move>,
) -> HandlerResult {
    let me = ctx.uid();
    let Some(game) = lobby.inner.lock().games.get(&me).cloned() else {
        return Err(HandlerError::new(1, "not in a game: play first"));
    };
    // Decided under the lock, answered after it: a lock is never held across an await.
    let decided = {
        let mut game = game.lock();
        match game.forfeited_to {
            Some(winner) => Err(json!({"code": 1, "error": "opponent left", "winner": winner})),
            None => {
                let mark = game.mark_of(me);
                match game.board.play(mark, request.cell) {
                    Ok(outcome) => Ok(board_update(&game, outcome)),
                    Err(error) => Err(json!({"code": 1, "error": error.message()})),
                }
            }
        }
    };
    let (update, players) = match decided {
        Ok(update) => update,
        Err(refusal) => {
            if refusal["winner"].is_number() {
                lobby.inner.lock().games.remove(&me);
            }
            ctx.respond(&refusal).await?;
            return Ok(());
        }
    };
    if update["next"].is_null() {
        lobby.finished.inc();
        let mut lobby = lobby.inner.lock();
        for player in players {
            lobby.games.remove(&player);
        }
    }
    ctx.respond(&json!({"code": 0})).await?;
    ctx.multicast(&players, BOARD, &update).await?;
    Ok(())
}

/// The push of the board after a move, and the two players to send it to.
fn board_update(game: &Game, outcome: Outcome) -> (serde_json::Value, [Uid; 2]) {
    let (next, winner) = match outcome {
        Outcome::Next(next) => (Some(game.player(next)), None),
        Outcome::Won(mark) => (None, Some(game.player(mark))),
        Outcome::Draw => (None, None),
    };
    let update = json!({
        "game": game.id,
        "board": game.board.render(),
        "next": next,
        "winner": winner,
        "draw": outcome == Outcome::Draw,
    });
    (update, [game.x, game.o])
}

/// A player left: out of the queue, and their game is forfeited to the opponent.
pub(crate) async fn left(event: Disconnect, lobby: Arc<Lobby>) {
    if event.uid == 0 {
        return;
    }
    let mut lobby = lobby.inner.lock();
    if lobby.waiting == Some(event.uid) {
        lobby.waiting = None;
    }
    if let Some(game) = lobby.games.remove(&event.uid) {
        let mut game = game.lock();
        let opponent = if game.x == event.uid { game.o } else { game.x };
        game.forfeited_to = Some(opponent);
    }
}
