/**
 * What the client needs from a transport: a connection that sends whole packets and reports decoded
 * frames. WebSocket ({@link "./websocket"}) and TCP ({@link "./tcp"}, Node only) implement it.
 * @module
 */
export {};
