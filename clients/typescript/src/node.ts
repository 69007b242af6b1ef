/**
 * Node entry: everything of the browser entry, plus the TCP transport and a WebSocket dialer backed by
 * the `ws` package (Node 20 has no stable global WebSocket).
 * @module
 */

import WebSocket from "ws";

import type { Dialer } from "./transport.js";
import { type WebSocketConstructor, webSocket as webSocketWith } from "./websocket.js";

export * from "./index.js";
export { tcp, type TcpOptions } from "./tcp.js";

/** A dialer of a `ws://` or `wss://` URL, using the global WebSocket when there is one, `ws` otherwise. */
export function nodeWebSocket(url: string): Dialer {
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  return webSocketWith(url, { WebSocket: global ?? (WebSocket as unknown as WebSocketConstructor) });
}
