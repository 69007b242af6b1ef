// The WebSocket transport with a scripted WebSocket class of the WHATWG shape (the real ones are
// exercised by test/integration/ in Node and test/browser/ in Chromium): one packet per binary message,
// text ignored, a message that is not one packet dropped, an oversize announcement closing the connection.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ConnectError, MalformedMessageError, PacketConfig, ProtocolError, webSocket } from "../../dist/index.js";

class ScriptedSocket {
  static last;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.listeners = {};
    ScriptedSocket.last = this;
  }
  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }
  fire(type, event = {}) {
    for (const fn of this.listeners[type] ?? []) fn(event);
  }
  open() {
    this.readyState = 1;
    this.fire("open");
  }
  send(data) {
    this.sent.push(data);
  }
  close(code) {
    this.closedWith = code;
    this.readyState = 3;
    queueMicrotask(() => this.fire("close"));
  }
}

const config = new PacketConfig();
const buffer = (bytes) => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);

function connect() {
  const seen = { frames: [], malformed: [], closed: [] };
  const pending = webSocket("ws://gate.test/", { WebSocket: ScriptedSocket })(
    config,
    {
      frame: (f) => seen.frames.push(f),
      malformed: (e) => seen.malformed.push(e),
      closed: (e) => seen.closed.push(e),
    },
    1000,
  );
  const socket = ScriptedSocket.last;
  assert.equal(socket.binaryType, "arraybuffer");
  return { pending, socket, seen };
}

test("binary messages are packets; text is ignored; a bad message is dropped and the connection goes on", async () => {
  const { pending, socket, seen } = connect();
  socket.open();
  const conn = await pending;
  conn.send(config.encodeHeartbeat());
  assert.deepEqual([...socket.sent[0]], [0, 0, 0, 1, 0x80]);
  socket.fire("message", { data: "a text message" });
  socket.fire("message", { data: buffer(config.encodeData(6, 0, new TextEncoder().encode("{}"))) });
  socket.fire("message", { data: buffer(new Uint8Array([0, 0, 0, 9, 0x80])) }); // announces 9, holds 1
  socket.fire("message", { data: buffer(config.encodeHeartbeat(1)) });
  assert.deepEqual(seen.frames.map((f) => f.kind), ["data", "heartbeat"]);
  assert.equal(seen.malformed.length, 1);
  assert.ok(seen.malformed[0] instanceof MalformedMessageError);
  assert.deepEqual(seen.closed, []);
});

test("an oversize announcement closes the connection with a ProtocolError", async () => {
  const { pending, socket, seen } = connect();
  socket.open();
  await pending;
  socket.fire("message", { data: buffer(new Uint8Array([0x7f, 0, 0, 0, 0])) });
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(socket.closedWith, 1002);
  assert.equal(seen.closed.length, 1);
  assert.ok(seen.closed[0] instanceof ProtocolError);
});

test("a socket that closes during the handshake, or never opens, rejects with ConnectError", async () => {
  const first = connect();
  first.socket.fire("error", { message: "refused" });
  first.socket.fire("close");
  await assert.rejects(first.pending, (err) => err instanceof ConnectError && /refused/.test(err.message));
  const second = connect(); // never opens: the 1000 ms limit passes
  await assert.rejects(second.pending, /no WebSocket handshake within 1000 ms/);
});
