//! The browser demo of `switchyard dev`, at `/demo/` on its admin port: a static page that logs in, joins a
//! room and chats over the dev gate's WebSocket port, built on the TypeScript SDK. The page and the SDK's browser build are
//! embedded in the binary (`clients/typescript/demo/`, kept fresh by that package's tests), and
//! `config.json` tells the page where the WebSocket listener is and which packet settings to use.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use switchyard_protocol::PacketConfig;

/// Where the page lives on the admin port. The trailing slash matters: the page loads its files relative
/// to it.
pub(crate) const PATH: &str = "/demo/";

/// One embedded file: path under [`PATH`], content type, text.
type Asset = (&'static str, &'static str, &'static str);

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    ("", HTML, include_str!("../clients/typescript/demo/index.html")),
    (
        "index.html",
        HTML,
        include_str!("../clients/typescript/demo/index.html"),
    ),
    ("app.js", JS, include_str!("../clients/typescript/demo/app.js")),
    (
        "sdk/client.js",
        JS,
        include_str!("../clients/typescript/demo/sdk/client.js"),
    ),
    (
        "sdk/codec.js",
        JS,
        include_str!("../clients/typescript/demo/sdk/codec.js"),
    ),
    (
        "sdk/errors.js",
        JS,
        include_str!("../clients/typescript/demo/sdk/errors.js"),
    ),
    (
        "sdk/events.js",
        JS,
        include_str!("../clients/typescript/demo/sdk/events.js"),
    ),
    (
        "sdk/index.js",
        JS,
        include_str!("../clients/typescript/demo/sdk/index.js"),
    ),
    (
        "sdk/transport.js",
        JS,
        include_str!("../clients/typescript/demo/sdk/transport.js"),
    ),
    (
        "sdk/websocket.js",
        JS,
        include_str!("../clients/typescript/demo/sdk/websocket.js"),
    ),
];

/// What the page needs to know to connect: the WebSocket URL and the packet settings.
#[derive(Debug, Clone)]
pub(crate) struct DemoConfig {
    /// `ws://host:port/path` (or `wss://` with TLS); `None` when the WebSocket listener is off.
    pub(crate) ws_url: Option<String>,
    pub(crate) packet: PacketConfig,
    /// The client heartbeat interval in milliseconds: half the gate's, so the gate never sees it idle.
    pub(crate) heartbeat_ms: u128,
}

impl DemoConfig {
    fn json(&self) -> String {
        serde_json::json!({
            "ws": self.ws_url,
            "byteOrder": self.packet.byte_order().as_str(),
            "routeBytes": self.packet.route_bytes(),
            "seqBytes": self.packet.seq_bytes(),
            "maxPacketBytes": self.packet.max_packet_bytes(),
            "heartbeatMs": self.heartbeat_ms,
        })
        .to_string()
    }
}

/// The page's routes, to merge into the admin server.
pub(crate) fn router(config: DemoConfig) -> Router {
    let config_json = config.json();
    let mut app = Router::new()
        .route("/demo", get(|| async { Redirect::permanent(PATH) }))
        .route(
            &format!("{PATH}config.json"),
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], config_json) }),
        );
    for &(file, content_type, body) in ASSETS {
        app = app.route(
            &format!("{PATH}{file}"),
            get(move || async move { ([(header::CONTENT_TYPE, content_type)], body).into_response() }),
        );
    }
    app
}
