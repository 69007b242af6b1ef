/**
 * What the client needs from a transport: a connection that sends whole packets and reports decoded
 * frames. WebSocket ({@link "./websocket"}) and TCP ({@link "./tcp"}, Node only) implement it.
 * @module
 */

import type { Frame, PacketConfig } from "./codec.js";

/** What a connection reports to its owner. `closed` is called exactly once. */
export interface ConnectionHandlers {
  /** A packet arrived. */
  frame(frame: Frame): void;
  /** A WebSocket message that was not one packet arrived and was dropped; the connection goes on. */
  malformed(error: Error): void;
  /** The connection ended: `error` when it failed or the peer broke the protocol, none when closed cleanly. */
  closed(error?: Error): void;
}

/** One open connection to a gate. */
export interface Connection {
  /** Queues one whole packet (size field included). */
  send(packet: Uint8Array): void;
  /** Closes the connection; `closed` follows. */
  close(): void;
  /** Where it goes, e.g. `tcp://127.0.0.1:3553` or `ws://127.0.0.1:3554/`. */
  readonly target: string;
}

/**
 * Opens a connection. Rejects with a `ConnectError` when it cannot be opened within `timeoutMs`.
 * A client calls its dialer again for each reconnection.
 */
export type Dialer = (config: PacketConfig, handlers: ConnectionHandlers, timeoutMs: number) => Promise<Connection>;
