/**
 * Switchyard's TypeScript client SDK, browser-safe entry: the due packet codec, the client and the
 * WebSocket transport. Node programs import `switchyard-client/node` for TCP and a Node WebSocket.
 * @module
 */
export * from "./codec.js";
export * from "./errors.js";
export * from "./events.js";
export * from "./client.js";
export { webSocket } from "./websocket.js";
