/**
 * The WebSocket transport: each binary message carries exactly one packet. Works with the browser's
 * `WebSocket` and, in Node, with any constructor of the same shape (`ws`; see `switchyard-client/node`).
 * @module
 */

import type { Frame, PacketConfig } from "./codec.js";
import { ConnectError, MalformedMessageError } from "./errors.js";
import type { Connection, ConnectionHandlers, Dialer } from "./transport.js";

/** The part of the WHATWG WebSocket this transport uses. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "close" | "error" | "message", listener: (event: any) => void): void;
}

/** A WebSocket class: `globalThis.WebSocket` in browsers, `ws`'s in Node. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Options of {@link webSocket}. */
export interface WebSocketOptions {
  /** The WebSocket class to use; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
}

/** A dialer of `url` (`ws://` or `wss://`). */
export function webSocket(url: string, options: WebSocketOptions = {}): Dialer {
  return (config, handlers, timeoutMs) => openWebSocket(url, options, config, handlers, timeoutMs);
}

function openWebSocket(
  url: string,
  options: WebSocketOptions,
  config: PacketConfig,
  handlers: ConnectionHandlers,
  timeoutMs: number,
): Promise<Connection> {
  const Ctor = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (Ctor === undefined) {
    return Promise.reject(
      new ConnectError(url, "no WebSocket class here: in Node 20, import from 'switchyard-client/node'"),
    );
  }
  return new Promise((resolve, reject) => {
    let socket: WebSocketLike;
    try {
      socket = new Ctor(url);
    } catch (err) {
      reject(new ConnectError(url, String(err), { cause: err }));
      return;
    }
    socket.binaryType = "arraybuffer";
    let opened = false;
    let ended = false;
    let failure: Error | undefined;
    const timer = setTimeout(() => {
      if (opened) return;
      ended = true;
      socket.close();
      reject(new ConnectError(url, `no WebSocket handshake within ${timeoutMs} ms`));
    }, timeoutMs);
    const connection: Connection = {
      target: url,
      send: (packet) => {
        if (socket.readyState === 1) socket.send(packet);
      },
      close: () => socket.close(1000),
    };
    socket.addEventListener("open", () => {
      opened = true;
      clearTimeout(timer);
      resolve(connection);
    });
    socket.addEventListener("message", (event: { data: unknown }) => {
      // Text messages are not packets (and a due server never sends any).
      if (!(event.data instanceof ArrayBuffer)) return;
      let frame: Frame;
      try {
        frame = config.parseMessage(new Uint8Array(event.data));
      } catch (err) {
        if (err instanceof MalformedMessageError) {
          handlers.malformed(err);
          return;
        }
        // Oversize: a server that sends it cannot be trusted with this connection.
        failure = err as Error;
        socket.close(1002);
        return;
      }
      handlers.frame(frame);
    });
    socket.addEventListener("error", (event: { message?: string; error?: unknown }) => {
      failure ??= new ConnectError(url, event.message ?? "WebSocket error", { cause: event.error });
    });
    socket.addEventListener("close", () => {
      clearTimeout(timer);
      if (ended) return;
      ended = true;
      if (!opened) {
        reject(failure instanceof ConnectError ? failure : new ConnectError(url, "the WebSocket closed during the handshake"));
        return;
      }
      handlers.closed(failure);
    });
  });
}
