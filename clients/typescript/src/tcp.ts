/**
 * The TCP transport (Node only): a byte stream of packets back to back, optionally in TLS.
 * @module
 */

import * as net from "node:net";
import * as tls from "node:tls";

import { ConnectError } from "./errors.js";
import type { Connection, Dialer } from "./transport.js";

/** Options of {@link tcp}. */
export interface TcpOptions {
  /** Speak TLS, with these Node TLS options (`ca`, `servername`, ...). The gate needs `--tls-cert`. */
  tls?: tls.ConnectionOptions;
}

/** A dialer of `host:port` over TCP. */
export function tcp(host: string, port: number, options: TcpOptions = {}): Dialer {
  const target = `${options.tls ? "tls" : "tcp"}://${host}:${port}`;
  return (config, handlers, timeoutMs) =>
    new Promise<Connection>((resolve, reject) => {
      const socket = options.tls
        ? tls.connect({ ...options.tls, host, port })
        : net.connect({ host, port });
      socket.setNoDelay(true);
      const decoder = config.decoder();
      let opened = false;
      let failure: Error | undefined;
      const timer = setTimeout(() => {
        socket.destroy(new ConnectError(target, `no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      const connection: Connection = {
        target,
        send: (packet) => {
          if (!socket.destroyed) socket.write(packet);
        },
        close: () => socket.end(),
      };
      socket.once(options.tls ? "secureConnect" : "connect", () => {
        opened = true;
        clearTimeout(timer);
        resolve(connection);
      });
      socket.on("data", (chunk: Buffer) => {
        try {
          for (const frame of decoder.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length))) {
            handlers.frame(frame);
          }
        } catch (err) {
          // Oversize: the stream cannot be resynchronised.
          failure = err as Error;
          socket.destroy();
        }
      });
      socket.on("error", (err) => {
        failure ??= err instanceof ConnectError ? err : new ConnectError(target, err.message, { cause: err });
      });
      socket.on("close", () => {
        clearTimeout(timer);
        if (!opened) {
          reject(failure ?? new ConnectError(target, "closed before connecting"));
          return;
        }
        handlers.closed(failure);
      });
    });
}
