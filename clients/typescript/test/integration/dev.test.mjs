// The SDK against a real `switchyard dev` (started per test on ephemeral ports): echo over TCP and
// WebSocket with two packet settings, login and a stateful route, room chat pushes between two clients,
// heartbeats in resp and tick mode with server time, and reconnect-elsewhere when a gate is SIGTERMed.
import assert from "node:assert/strict";
import { after, test } from "node:test";

import { Client, ClientClosedError, nodeWebSocket, tcp } from "../../dist/node.js";
import { metric, startDev } from "../support/dev.mjs";

const running = [];
async function dev(flags = []) {
  const d = await startDev(flags);
  running.push(d);
  return d;
}
after(async () => {
  for (const d of running) await d.stop();
});

const SETTINGS = [
  { name: "defaults", flags: [], packet: {} },
  {
    name: "little-endian, route 4, no seq",
    flags: ["--byte-order", "little", "--route-bytes", "4", "--seq-bytes", "0"],
    packet: { byteOrder: "little", routeBytes: 4, seqBytes: 0 },
  },
];

for (const setting of SETTINGS) {
  test(`echo, login, whoami and logout over TCP and WebSocket (${setting.name})`, async () => {
    const d = await dev(setting.flags);
    for (const [transport, dial] of [
      ["tcp", tcp(d.tcp.host, d.tcp.port)],
      ["ws", nodeWebSocket(d.ws)],
    ]) {
      const client = await Client.connect({ dial, ...setting.packet, heartbeatIntervalMs: 0 });
      assert.deepEqual(await client.request(1, { message: "hi" }), { code: 0, message: "hi" }, transport);
      // Pipelined requests come back to the right callers.
      const many = await Promise.all([...Array(20).keys()].map((i) => client.request(1, { message: `m${i}` })));
      assert.deepEqual(many.map((r) => r.message), [...Array(20).keys()].map((i) => `m${i}`), transport);
      const uid = transport === "tcp" ? 101 : 102;
      const login = await client.request(2, { uid, name: "ada" });
      assert.equal(login.code, 0, transport);
      assert.equal(login.uid, uid);
      assert.equal(login.node, "dev-lobby", "login is the lobby pool's");
      assert.deepEqual(await client.request(3), { code: 0, uid, node: "dev-battle" }, transport);
      assert.deepEqual(await client.request(7), { code: 0 }, transport);
      client.close();
      await assert.rejects(client.request(1, { message: "after close" }), ClientClosedError);
    }
  });
}

test("a room chat line reaches the other member as push 6, and a second login gets push 8", async () => {
  const d = await dev();
  const ada = await Client.connect({ dial: tcp(d.tcp.host, d.tcp.port), heartbeatIntervalMs: 0 });
  const bob = await Client.connect({ dial: nodeWebSocket(d.ws), heartbeatIntervalMs: 0 });
  await ada.request(2, { uid: 1, name: "ada" });
  await bob.request(2, { uid: 2, name: "bob" });
  assert.deepEqual(await ada.request(4, { room: "lobby" }), { code: 0, members: 1 });
  assert.deepEqual(await bob.request(4, { room: "lobby" }), { code: 0, members: 2 });
  const heard = new Promise((resolve) => bob.onPush(6, resolve));
  assert.deepEqual(await ada.request(5, { room: "lobby", text: "hello bob" }), { code: 0 });
  assert.deepEqual(await heard, { room: "lobby", from: 1, text: "hello bob" });

  // bob logs in a second time elsewhere: the older connection is told why (push 8) and closed.
  const kicked = new Promise((resolve) => bob.onPush(8, resolve));
  const bob2 = await Client.connect({ dial: tcp(d.tcp.host, d.tcp.port), heartbeatIntervalMs: 0 });
  await bob2.request(2, { uid: 2, name: "bob again" });
  assert.deepEqual(await kicked, { reason: "duplicate login" });
  for (const c of [ada, bob, bob2]) c.close();
});

test("resp mode: client heartbeats keep an idle connection open and are answered", async () => {
  const d = await dev(["--heartbeat-interval", "300ms"]);
  for (const dial of [tcp(d.tcp.host, d.tcp.port), nodeWebSocket(d.ws)]) {
    const client = await Client.connect({ dial, heartbeatIntervalMs: 100, reconnect: false });
    let answered = 0;
    client.on("heartbeat", () => answered++);
    let disconnected = false;
    client.on("disconnected", () => (disconnected = true));
    await new Promise((r) => setTimeout(r, 1500)); // 5 x the gate's idle limit of 2 x 300 ms
    assert.equal(disconnected, false, "heartbeats kept it alive");
    assert.ok(answered >= 8, `${answered} heartbeats answered`);
    assert.deepEqual(await client.request(1, { message: "still here" }), { code: 0, message: "still here" });
    client.close();
  }
  // Without heartbeats the gate closes the connection as idle.
  const silent = await Client.connect({ dial: tcp(d.tcp.host, d.tcp.port), heartbeatIntervalMs: 0, reconnect: false });
  const closed = await silent.once("closed");
  assert.equal(closed.error.name, "ConnectionLostError");
  assert.equal(await metric(d, "switchyard_gate_connections_closed_total", ['reason="idle"']), 1);
});

test("tick mode: the gate sends heartbeats with its server time", async () => {
  const d = await dev(["--heartbeat-interval", "200ms", "--heartbeat-mode", "tick", "--heartbeat-time"]);
  // The client's heartbeats (every 50 ms) keep the connection alive; in tick mode the gate does not answer
  // them but sends its own every 200 ms.
  const client = await Client.connect({ dial: nodeWebSocket(d.ws), heartbeatIntervalMs: 50 });
  const times = [];
  client.on("heartbeat", (h) => times.push(h.serverTimeNanos));
  await new Promise((r) => setTimeout(r, 700));
  assert.ok(times.length >= 2 && times.length <= 5, `${times.length} ticks in 700 ms at 200 ms`);
  assert.ok(times.every((t) => typeof t === "bigint"), "every tick carries the server time");
  const nowNanos = BigInt(Date.now()) * 1_000_000n;
  const skew = nowNanos - client.serverTimeNanos;
  assert.ok(skew >= 0n && skew < 2_000_000_000n, `server time ${client.serverTimeNanos} vs now ${nowNanos}`);
  assert.ok(times[1] > times[0], "time moves forward");
  client.close();
});

for (const transport of ["tcp", "ws"]) {
  test(`SIGTERM of a gate (${transport}): reconnect-elsewhere, the client moves to another gate and logs in again`, async () => {
    const gateA = await dev(["--gate-drain-deadline", "3s"]);
    const gateB = await dev();
    const dialer = (d) => (transport === "tcp" ? tcp(d.tcp.host, d.tcp.port) : nodeWebSocket(d.ws));
    const logins = [];
    const client = await Client.connect({
      dial: [dialer(gateA), dialer(gateB)],
      heartbeatIntervalMs: 0,
      reconnect: { initialDelayMs: 10_000 }, // the move must not wait for a backoff
      onConnect: async (session) => {
        logins.push(await session.request(2, { uid: 77, name: "ada" }));
      },
    });
    const firstTarget = client.target;
    const told = client.once("reconnect-elsewhere");
    const moved = client.once("connected");
    const started = Date.now();
    gateA.terminate();
    assert.equal((await told).target, firstTarget);
    const { target, reconnect } = await moved;
    const took = Date.now() - started;
    assert.ok(took < 2000, `moved in ${took} ms`);
    assert.equal(reconnect, true);
    assert.notEqual(target, firstTarget);
    assert.equal(logins.length, 2, "logged in again");
    assert.equal(logins[1].code, 0);
    // The stateful route works through the new gate: its battle node takes the player.
    assert.deepEqual(await client.request(3), { code: 0, uid: 77, node: "dev-battle" });
    const { code } = await gateA.exited;
    assert.equal(code, 0, "gate A drained and exited by itself");
    assert.equal(client.stats.reconnects, 1);
    client.close();
  });
}

test("switchyard dev serves the browser demo at /demo/ on its admin port, byte for byte", async () => {
  const { readFileSync } = await import("node:fs");
  const { BROWSER_MODULES } = await import("../../scripts/browser-modules.mjs");
  const d = await dev(["--byte-order", "little", "--seq-bytes", "4", "--heartbeat-interval", "4s"]);
  assert.match(d.demo, /^http:\/\/127\.0\.0\.1:\d+\/demo\/$/);
  for (const [path, file, type] of [
    ["", "index.html", "text/html"],
    ["index.html", "index.html", "text/html"],
    ["app.js", "app.js", "text/javascript"],
    ...BROWSER_MODULES.map((m) => [`sdk/${m}`, `sdk/${m}`, "text/javascript"]),
  ]) {
    const response = await fetch(d.demo + path);
    assert.equal(response.status, 200, path);
    assert.ok(response.headers.get("content-type").startsWith(type), path);
    assert.equal(await response.text(), readFileSync(new URL(`../../demo/${file}`, import.meta.url), "utf8"), path);
  }
  const config = await (await fetch(`${d.demo}config.json`)).json();
  assert.deepEqual(config, {
    ws: d.ws,
    byteOrder: "little",
    routeBytes: 2,
    seqBytes: 4,
    maxPacketBytes: 65536,
    heartbeatMs: 2000,
  });
  assert.equal((await fetch(d.demo + "nope.js")).status, 404);
});
