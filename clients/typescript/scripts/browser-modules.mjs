// The SDK's modules a browser loads: everything but the Node-only entry (node.js) and transport (tcp.js).
export const BROWSER_MODULES = ["client.js", "codec.js", "errors.js", "events.js", "index.js", "transport.js", "websocket.js"];
