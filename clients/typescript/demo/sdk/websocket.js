/**
 * The WebSocket transport: each binary message carries exactly one packet. Works with the browser's
 * `WebSocket` and, in Node, with any constructor of the same shape (`ws`; see `switchyard-client/node`).
 * @module
 */
import { ConnectError, MalformedMessageError } from "./errors.js";
/** A dialer of `url` (`ws://` or `wss://`). */
export function webSocket(url, options = {}) {
    return (config, handlers, timeoutMs) => openWebSocket(url, options, config, handlers, timeoutMs);
}
function openWebSocket(url, options, config, handlers, timeoutMs) {
    const Ctor = options.WebSocket ?? globalThis.WebSocket;
    if (Ctor === undefined) {
        return Promise.reject(new ConnectError(url, "no WebSocket class here: in Node 20, import from 'switchyard-client/node'"));
    }
    return new Promise((resolve, reject) => {
        let socket;
        try {
            socket = new Ctor(url);
        }
        catch (err) {
            reject(new ConnectError(url, String(err), { cause: err }));
            return;
        }
        socket.binaryType = "arraybuffer";
        let opened = false;
        let ended = false;
        let failure;
        const timer = setTimeout(() => {
            if (opened)
                return;
            ended = true;
            socket.close();
            reject(new ConnectError(url, `no WebSocket handshake within ${timeoutMs} ms`));
        }, timeoutMs);
        const connection = {
            target: url,
            send: (packet) => {
                if (socket.readyState === 1)
                    socket.send(packet);
            },
            close: () => socket.close(1000),
        };
        socket.addEventListener("open", () => {
            opened = true;
            clearTimeout(timer);
            resolve(connection);
        });
        socket.addEventListener("message", (event) => {
            // Text messages are not packets (and a due server never sends any).
            if (!(event.data instanceof ArrayBuffer))
                return;
            let frame;
            try {
                frame = config.parseMessage(new Uint8Array(event.data));
            }
            catch (err) {
                if (err instanceof MalformedMessageError) {
                    handlers.malformed(err);
                    return;
                }
                // Oversize: a server that sends it cannot be trusted with this connection.
                failure = err;
                socket.close(1002);
                return;
            }
            handlers.frame(frame);
        });
        socket.addEventListener("error", (event) => {
            failure ??= new ConnectError(url, event.message ?? "WebSocket error", { cause: event.error });
        });
        socket.addEventListener("close", () => {
            clearTimeout(timer);
            if (ended)
                return;
            ended = true;
            if (!opened) {
                reject(failure instanceof ConnectError ? failure : new ConnectError(url, "the WebSocket closed during the handshake"));
                return;
            }
            handlers.closed(failure);
        });
    });
}
