// The browser demo: a Switchyard client (the TypeScript SDK, served from ./sdk/) on the WebSocket port
// that config.json names. Routes of the demo game: 2 login, 4 join, 5 say, push 6 chat line, push 8 kicked.
import { Client, webSocket } from "./sdk/index.js";

const $ = (id) => document.getElementById(id);
const status = (text, error = false) => {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
};
const log = (text, kind = "") => {
  const li = document.createElement("li");
  li.textContent = text;
  li.className = kind;
  $("log").append(li);
  $("log").scrollTop = $("log").scrollHeight;
};

const config = await (await fetch("config.json")).json();
// A gate listening on every interface (0.0.0.0 or [::]) is reached at the host that served this page.
const wsUrl = new URL(config.ws);
if (wsUrl.hostname === "0.0.0.0" || wsUrl.hostname === "[::]") wsUrl.hostname = location.hostname;
config.ws = wsUrl.href;
let player = null; // { uid, name } once logged in
let room = null;

const client = await Client.connect({
  dial: webSocket(config.ws),
  byteOrder: config.byteOrder,
  routeBytes: config.routeBytes,
  seqBytes: config.seqBytes,
  maxPacketBytes: config.maxPacketBytes,
  heartbeatIntervalMs: config.heartbeatMs,
  // After a reconnection (the gate restarted or asked us to move), log in and join the room again.
  onConnect: async (session) => {
    if (!session.reconnect || player === null) return;
    await session.request(2, player);
    if (room !== null) await session.request(4, { room });
  },
}).catch((err) => {
  status(`cannot connect to ${config.ws}: ${err.message}`, true);
  throw err;
});
status(`connected to ${config.ws}`);
client.on("reconnecting", ({ attempt }) => status(`connection lost, reconnecting (attempt ${attempt})…`, true));
client.on("connected", ({ target, reconnect }) => reconnect && status(`reconnected to ${target}`));
client.onPush(6, (line) => log(`${line.from === player?.uid ? "me" : "#" + line.from}: ${line.text}`, line.from === player?.uid ? "me" : ""));
client.onPush(8, (why) => status(`logged out: ${why.reason}`, true));

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const wanted = { uid: Number(form.get("uid")), name: String(form.get("name")) };
  const reply = await client.request(2, wanted);
  if (reply.code !== 0) return status(`login refused: ${reply.error}`, true);
  player = wanted;
  status(`logged in as ${wanted.name} (uid ${reply.uid}) on node ${reply.node}`);
  $("chat").disabled = false;
});

$("join").addEventListener("submit", async (event) => {
  event.preventDefault();
  const wanted = String(new FormData(event.target).get("room"));
  const reply = await client.request(4, { room: wanted });
  if (reply.code !== 0) return status(`join refused: ${reply.error}`, true);
  room = wanted;
  log(`joined ${wanted} (${reply.members} member${reply.members === 1 ? "" : "s"})`, "system");
});

$("say").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = event.target.elements.text;
  if (room === null) return log("join a room first", "system");
  const reply = await client.request(5, { room, text: input.value });
  if (reply.code !== 0) return status(`not sent: ${reply.error}`, true);
  input.value = "";
});
