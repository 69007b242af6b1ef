// The client against an in-memory fake gate (a dialer whose connections are driven by the test). The
// same behaviour is tested against a real `switchyard dev` in test/integration/; these are the fast,
// exact-timing checks of matching, timeouts, backoff and the reconnect-elsewhere switch-over.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Client,
  ClientClosedError,
  ConnectError,
  ConnectionLostError,
  PacketConfig,
  TimeoutError,
} from "../../dist/index.js";

const config = new PacketConfig();
const json = (v) => new TextEncoder().encode(JSON.stringify(v));

/** A dialer of fake connections; `refuse` makes the next dials fail. */
function fakeGate(name = "gate") {
  const gate = { connections: [], dials: 0, refuse: 0 };
  gate.dial = async (cfg, handlers) => {
    gate.dials++;
    if (gate.refuse > 0) {
      gate.refuse--;
      throw new ConnectError(`fake://${name}`, "refused");
    }
    const conn = {
      target: `fake://${name}/${gate.dials}`,
      sent: [],
      open: true,
      send(packet) {
        const frames = cfg.decoder().push(packet);
        for (const frame of frames) conn.sent.push(frame);
        conn.onSent?.(frames);
      },
      close() {
        if (!conn.open) return;
        conn.open = false;
        queueMicrotask(() => handlers.closed());
      },
      deliver(frame) {
        handlers.frame(frame);
      },
      reply(route, seq, value) {
        handlers.frame(cfg.parseMessage(cfg.encodeData(route, seq, json(value))));
      },
    };
    gate.connections.push(conn);
    return conn;
  };
  return gate;
}

/** Answers every request on `conn` with `answer(route, payload)`, asynchronously. */
function autoReply(conn, answer) {
  conn.onSent = (frames) => {
    for (const f of frames) {
      if (f.kind !== "data") continue;
      const body = JSON.parse(new TextDecoder().decode(f.payload));
      setTimeout(() => conn.open && conn.reply(f.route, f.seq, answer(f.route, body)), 1);
    }
  };
}

test("responses are matched by seq even when they come back out of order", async () => {
  const gate = fakeGate();
  const client = await Client.connect({ dial: gate.dial, heartbeatIntervalMs: 0 });
  const conn = gate.connections[0];
  const a = client.request(1, { message: "a" });
  const b = client.request(1, { message: "b" });
  const [fa, fb] = conn.sent;
  assert.notEqual(fa.seq, fb.seq);
  conn.reply(1, fb.seq, { message: "B" });
  conn.reply(1, fa.seq, { message: "A" });
  assert.deepEqual(await a, { message: "A" });
  assert.deepEqual(await b, { message: "B" });
  client.close();
});

test("a request without an answer times out; a late answer is counted, not delivered as a push", async () => {
  const gate = fakeGate();
  const client = await Client.connect({ dial: gate.dial, heartbeatIntervalMs: 0, requestTimeoutMs: 50 });
  const pushes = [];
  client.onAnyPush((p) => pushes.push(p));
  const started = Date.now();
  await assert.rejects(client.request(1, {}), (err) => err instanceof TimeoutError && err.route === 1 && err.fault === "server");
  assert.ok(Date.now() - started >= 45);
  gate.connections[0].reply(1, gate.connections[0].sent[0].seq, {});
  assert.equal(client.stats.unmatched, 1);
  assert.equal(pushes.length, 0);
  client.close();
});

test("pushes (seq 0) reach the handlers of their route, decoded", async () => {
  const gate = fakeGate();
  const client = await Client.connect({ dial: gate.dial, heartbeatIntervalMs: 0 });
  const chat = [];
  const off = client.onPush(6, (line) => chat.push(line));
  client.onPush(8, () => assert.fail("route 8 got a route-6 push"));
  gate.connections[0].reply(6, 0, { room: "r", from: 1, text: "hello" });
  off();
  gate.connections[0].reply(6, 0, { room: "r", from: 1, text: "after unsubscribe" });
  assert.deepEqual(chat, [{ room: "r", from: 1, text: "hello" }]);
  client.close();
});

test("without a seq field, responses are matched first in, first out per route", async () => {
  const cfg = new PacketConfig({ seqBytes: 0, routeBytes: 4, byteOrder: "little" });
  const gate = fakeGate();
  const client = await Client.connect({ dial: gate.dial, heartbeatIntervalMs: 0, seqBytes: 0, routeBytes: 4, byteOrder: "little" });
  const conn = gate.connections[0];
  const one = client.request(1, { n: 1 });
  const two = client.request(1, { n: 2 });
  assert.deepEqual(conn.sent.map((f) => f.seq), [0, 0]);
  conn.deliver(cfg.parseMessage(cfg.encodeData(1, 0, json({ r: 1 }))));
  conn.deliver(cfg.parseMessage(cfg.encodeData(1, 0, json({ r: 2 }))));
  assert.deepEqual([await one, await two], [{ r: 1 }, { r: 2 }]);
  client.close();
});

test("heartbeats are sent every interval and the server time is kept", async () => {
  const gate = fakeGate();
  const client = await Client.connect({ dial: gate.dial, heartbeatIntervalMs: 20 });
  const conn = gate.connections[0];
  await new Promise((r) => setTimeout(r, 110));
  const sent = conn.sent.filter((f) => f.kind === "heartbeat").length;
  assert.ok(sent >= 3 && sent <= 6, `${sent} heartbeats in 110 ms at 20 ms`);
  const seen = client.once("heartbeat");
  conn.deliver(config.parseMessage(config.encodeHeartbeat(0, 1764756000123456789n)));
  assert.equal((await seen).serverTimeNanos, 1764756000123456789n);
  assert.equal(client.serverTimeNanos, 1764756000123456789n);
  client.close();
});

test("a lost connection reconnects with growing backoff and logs in again; queued requests go out after", async () => {
  const gate = fakeGate();
  const logins = [];
  const client = await Client.connect({
    dial: gate.dial,
    heartbeatIntervalMs: 0,
    reconnect: { initialDelayMs: 20, factor: 2, jitter: 0, maxDelayMs: 1000 },
    onConnect: async (session) => {
      autoReply(gate.connections.at(-1), (route, body) => (route === 2 ? { code: 0, uid: body.uid } : { code: 0, echo: body }));
      logins.push(await session.request(2, { uid: 7 }));
    },
  });
  assert.equal(logins.length, 1);
  const delays = [];
  client.on("reconnecting", (e) => delays.push(e.delayMs));
  gate.refuse = 2;
  const inFlight = gate.connections[0];
  inFlight.onSent = undefined; // the next request stays unanswered: it is in flight when the link drops
  const lost = client.request(1, { n: 1 });
  inFlight.close();
  await assert.rejects(lost, ConnectionLostError);
  assert.equal(client.state, "reconnecting");
  const queued = client.request(1, { n: 2 }); // waits for the new connection
  const connected = await client.once("connected");
  assert.equal(connected.reconnect, true);
  assert.deepEqual(delays, [20, 40, 80]);
  assert.deepEqual(await queued, { code: 0, echo: { n: 2 } });
  assert.equal(logins.length, 2, "the login ran again on the new connection");
  // The login went out before the queued request.
  assert.deepEqual(gate.connections.at(-1).sent.map((f) => f.route), [2, 1]);
  client.close();
});

test("reconnect-elsewhere moves at once to the next gate, logs in there, and lets the old one finish", async () => {
  const answer = (route, body) => (route === 2 ? { code: 0, uid: body.uid } : { code: 0, echo: body });
  const gateA = fakeGate("a");
  const gateB = fakeGate("b");
  const logins = [];
  const client = await Client.connect({
    dial: [gateA.dial, gateB.dial],
    heartbeatIntervalMs: 0,
    reconnect: { initialDelayMs: 5000 }, // a backoff would show: the move must not wait for it
    onConnect: async (session) => {
      const gate = session.target.startsWith("fake://b/") ? gateB : gateA;
      autoReply(gate.connections.at(-1), answer);
      logins.push([session.target, session.reconnect, await session.request(2, { uid: 9 })]);
    },
  });
  const old = gateA.connections[0];
  old.onSent = undefined;
  const inFlight = client.request(1, { n: "old" }); // sent to gate A before the signal
  const moved = client.once("reconnect-elsewhere");
  const started = Date.now();
  old.deliver(config.parseMessage(config.encodeHeartbeat(1)));
  await moved;
  await client.once("connected");
  assert.ok(Date.now() - started < 1000, "moved without waiting for the backoff");
  assert.equal(client.target, gateB.connections[0].target);
  assert.equal(logins.length, 2);
  assert.deepEqual(logins[1][2], { code: 0, uid: 9 });
  // The old connection still answers what was in flight on it.
  old.reply(1, old.sent.at(-1).seq, { code: 0, late: true });
  assert.deepEqual(await inFlight, { code: 0, late: true });
  // New requests go to gate B; gate A closing now changes nothing.
  old.close();
  assert.deepEqual(await client.request(1, { n: "new" }), { code: 0, echo: { n: "new" } });
  assert.equal(client.state, "connected");
  assert.equal(client.stats.reconnects, 1);
  client.close();
});

test("a login that fails on reconnection is retried; reconnection gives up after maxAttempts", async () => {
  const gate = fakeGate();
  let failLogins = 0;
  const client = await Client.connect({
    dial: gate.dial,
    heartbeatIntervalMs: 0,
    reconnect: { initialDelayMs: 5, jitter: 0, maxAttempts: 3 },
    onConnect: () => {
      if (failLogins-- > 0) throw new Error("login refused");
    },
  });
  failLogins = 10;
  const closed = client.once("closed");
  const errors = [];
  client.on("reconnecting", (e) => e.error && errors.push(e.error.name));
  gate.connections[0].close();
  const { error } = await closed;
  assert.equal(error.name, "LoginError");
  assert.equal(error.cause.message, "login refused");
  assert.deepEqual(errors, ["LoginError", "LoginError"]);
  assert.equal(gate.dials, 4, "the first connection and three attempts");
  assert.equal(client.state, "closed");
  await assert.rejects(client.request(1, {}), ClientClosedError);
});

test("close() fails waiting requests with ClientClosedError and stops reconnecting", async () => {
  const gate = fakeGate();
  const client = await Client.connect({ dial: gate.dial, heartbeatIntervalMs: 0, reconnect: { initialDelayMs: 30 } });
  const pending = client.request(1, {});
  client.close();
  await assert.rejects(pending, (err) => err instanceof ClientClosedError && err.fault === "local");
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(gate.dials, 1);
});

test("the first connection failing rejects connect() with ConnectError", async () => {
  const gate = fakeGate();
  gate.refuse = 1;
  await assert.rejects(Client.connect({ dial: gate.dial }), (err) => err instanceof ConnectError && err.fault === "network");
});
