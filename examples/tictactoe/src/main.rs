//! Tic-tac-toe on Switchyard: the game's routes, its one metric, and the node runtime that serves them.

mod board;
mod handlers;

use switchyard_node::{RouteOptions, Router, Runtime};

#[tokio::main]
async fn main() -> Result<(), switchyard_node::RuntimeError> {
    let lobby = handlers::Lobby::shared();
    let finished = lobby.finished.clone();
    let router = Router::with_state(lobby)
        .route(handlers::LOGIN, RouteOptions::stateless(), handlers::login)
        .route(
            handlers::PLAY,
            RouteOptions::stateful().authorized(),
            handlers::play,
        )
        .route(
            handlers::MARK,
            RouteOptions::stateful().authorized(),
            handlers::mark,
        )
        .on_disconnect(handlers::left);
    // Flags and SWITCHYARD_* variables of the pod contract; the game's metric joins the node's on /metrics.
    let mut runtime = Runtime::from_command_line(router);
    runtime.registry_mut().register(
        "tictactoe_games_finished",
        "Games played to a win or a draw",
        finished,
    );
    runtime.run().await
}
