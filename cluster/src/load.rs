//! A node's load, as its admin HTTP server tells it at [`LOAD_PATH`]: the bound-player count and the routes
//! it serves. The operator reads it from every node pod (over the pod IP) and keeps the pod's
//! `switchyard.dev/bound-players`, `controller.kubernetes.io/pod-deletion-cost` and `switchyard.dev/routes`
//! annotations from it, so that nodes need no right to write pods: a node can only ever speak for itself.
//!
//! The body is two lines of text, one grammar for both sides ([`format_load`], [`parse_load`]):
//!
//! ```text
//! bound_players 42
//! routes 1,2,11
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

/// Where the admin server of a node answers with its load.
pub const LOAD_PATH: &str = "/load";
/// Most routes a node reports (about 48 KiB of text at most). A node with more reports the lowest ones.
pub const MAX_REPORTED_ROUTES: usize = 4096;
/// The largest [`LOAD_PATH`] body a reader accepts: [`MAX_REPORTED_ROUTES`] routes of 11 characters and a
/// comma each, plus the count, with room to spare.
pub const MAX_LOAD_BYTES: usize = 64 * 1024;

/// What a node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoad {
    /// Players bound to the node.
    pub bound_players: u64,
    /// The routes it serves, internal ones included: sorted, distinct, at most [`MAX_REPORTED_ROUTES`].
    pub routes: Vec<i32>,
}

/// A [`LOAD_PATH`] body or a routes list that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("the load report is {0} bytes, more than {MAX_LOAD_BYTES}")]
    TooLong(usize),
    #[error("the load report is not `bound_players N` then `routes R,R,...` (line {0})")]
    Syntax(usize),
    #[error("{0:?} is not a comma-separated list of route numbers")]
    Routes(String),
    #[error("the load report lists more than {MAX_REPORTED_ROUTES} routes")]
    TooManyRoutes,
}

/// The routes as the report (and the pod's routes annotation) spells them: sorted, distinct,
/// comma-separated; at most [`MAX_REPORTED_ROUTES`], the lowest.
pub fn format_routes(routes: &[i32]) -> String {
    let mut sorted = routes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.truncate(MAX_REPORTED_ROUTES);
    sorted.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// Reads a [`format_routes`] value: sorted and distinct; an empty value is no route.
///
/// # Errors
/// [`LoadError::Routes`] for anything but comma-separated decimal `i32`s (blanks around them allowed),
/// [`LoadError::TooManyRoutes`] past [`MAX_REPORTED_ROUTES`].
pub fn parse_routes(text: &str) -> Result<Vec<i32>, LoadError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut routes = Vec::new();
    for item in text.split(',') {
        if routes.len() == MAX_REPORTED_ROUTES {
            return Err(LoadError::TooManyRoutes);
        }
        let route = item
            .trim()
            .parse::<i32>()
            .map_err(|_| LoadError::Routes(text.chars().take(64).collect()))?;
        routes.push(route);
    }
    routes.sort_unstable();
    routes.dedup();
    Ok(routes)
}

/// The [`LOAD_PATH`] body.
pub fn format_load(load: &NodeLoad) -> String {
    format!(
        "bound_players {}\nroutes {}\n",
        load.bound_players,
        format_routes(&load.routes)
    )
}

/// Reads a [`LOAD_PATH`] body; the length is checked before anything else.
///
/// # Errors
/// [`LoadError`]: too long, lines missing, out of order or extra, a count that is not a decimal `u64`, or
/// routes as [`parse_routes`] refuses them.
pub fn parse_load(text: &str) -> Result<NodeLoad, LoadError> {
    if text.len() > MAX_LOAD_BYTES {
        return Err(LoadError::TooLong(text.len()));
    }
    let mut lines = text.strip_suffix('\n').unwrap_or(text).split('\n');
    let bound_players = lines
        .next()
        .and_then(|line| line.strip_prefix("bound_players "))
        .filter(|count| !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|count| count.parse::<u64>().ok())
        .ok_or(LoadError::Syntax(1))?;
    let routes = match lines.next() {
        Some("routes") => Vec::new(),
        Some(line) => parse_routes(line.strip_prefix("routes ").ok_or(LoadError::Syntax(2))?)?,
        None => return Err(LoadError::Syntax(2)),
    };
    if lines.next().is_some() {
        return Err(LoadError::Syntax(3));
    }
    Ok(NodeLoad {
        bound_players,
        routes,
    })
}

#[derive(Clone)]
struct LoadState {
    bound: watch::Receiver<usize>,
    routes: String,
}

/// The [`LOAD_PATH`] route of a node's admin server: `bound` (the node's bound-player count) and `routes`
/// (every route it serves), read at each request.
pub fn router(bound: watch::Receiver<usize>, routes: &[i32]) -> Router {
    if routes.len() > MAX_REPORTED_ROUTES {
        tracing::warn!(
            routes = routes.len(),
            "the node serves more than {MAX_REPORTED_ROUTES} routes; its load report lists the lowest only"
        );
    }
    let state = LoadState {
        bound,
        routes: format_routes(routes),
    };
    Router::new().route(LOAD_PATH, get(load_text)).with_state(state)
}

async fn load_text(State(state): State<LoadState>) -> impl IntoResponse {
    let bound = *state.bound.borrow();
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("bound_players {bound}\nroutes {}\n", state.routes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_written_sorted_and_distinct_and_read_back() {
        assert_eq!(format_routes(&[11, 2, 1, 2]), "1,2,11");
        assert_eq!(format_routes(&[]), "");
        assert_eq!(format_routes(&[-5, 0]), "-5,0");
        assert_eq!(parse_routes("1,2,11"), Ok(vec![1, 2, 11]));
        assert_eq!(parse_routes(" 11 , 1,1"), Ok(vec![1, 11]));
        assert_eq!(parse_routes(""), Ok(vec![]));
        for bad in ["1,,2", "one", "1;2", "99999999999"] {
            assert!(matches!(parse_routes(bad), Err(LoadError::Routes(_))), "{bad:?}");
        }
        let many: Vec<i32> = (0..5000).collect();
        let written = format_routes(&many);
        assert_eq!(
            parse_routes(&written).map(|routes| routes.len()),
            Ok(MAX_REPORTED_ROUTES)
        );
        let too_many = many.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        assert_eq!(parse_routes(&too_many), Err(LoadError::TooManyRoutes));
    }

    #[test]
    fn a_load_is_read_back_as_written() {
        for load in [
            NodeLoad {
                bound_players: 42,
                routes: vec![1, 2, 11],
            },
            NodeLoad {
                bound_players: 0,
                routes: vec![],
            },
            NodeLoad {
                bound_players: u64::MAX,
                routes: (0..MAX_REPORTED_ROUTES as i32).map(|r| r - 2000).collect(),
            },
        ] {
            let text = format_load(&load);
            assert!(text.len() <= MAX_LOAD_BYTES, "{}", text.len());
            assert_eq!(parse_load(&text), Ok(load));
        }
        assert_eq!(
            parse_load("bound_players 3\nroutes"),
            Ok(NodeLoad {
                bound_players: 3,
                routes: vec![]
            })
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_line() {
        for (bad, line) in [
            ("", 1),
            ("bound_players\nroutes 1\n", 1),
            ("bound_players -1\nroutes 1\n", 1),
            ("bound_players +1\nroutes 1\n", 1),
            ("bound_players 18446744073709551616\nroutes 1\n", 1),
            ("routes 1\nbound_players 1\n", 1),
            ("bound_players 1\n", 2),
            ("bound_players 1\nroute 1\n", 2),
            ("bound_players 1\nroutes 1\nextra\n", 3),
            ("bound_players 1\nroutes 1\n\n", 3),
        ] {
            assert_eq!(parse_load(bad), Err(LoadError::Syntax(line)), "{bad:?}");
        }
        assert!(matches!(
            parse_load("bound_players 1\nroutes 1,x\n"),
            Err(LoadError::Routes(_))
        ));
        let long = format!("bound_players 1\nroutes {}\n", "1,".repeat(MAX_LOAD_BYTES));
        assert_eq!(parse_load(&long), Err(LoadError::TooLong(long.len())));
    }
}
