// Every worked hex example of docs/protocol.md checked against this SDK's codec, both ways; the Rust
// codec checks the same blocks (protocol/tests/doc_examples.rs), so the doc is the one source of truth.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { PacketConfig, ProtocolError } from "../../dist/index.js";

const doc = readFileSync(new URL("../../../../docs/protocol.md", import.meta.url), "utf8");

function examples() {
  const lines = doc.split("\n");
  const found = [];
  lines.forEach((line, i) => {
    const m = /^<!-- packet (.*) -->$/.exec(line);
    if (!m) return;
    assert.equal(lines[i + 1], "```hex", `line ${i + 1}: a hex block must follow`);
    const bytes = [];
    for (let j = i + 2; lines[j] !== "```"; j++) {
      for (const pair of lines[j].split("#")[0].trim().split(/\s+/).filter(Boolean)) {
        assert.match(pair, /^[0-9a-f]{2}$/, `line ${j + 1}`);
        bytes.push(parseInt(pair, 16));
      }
    }
    found.push({ line: i + 1, meta: JSON.parse(m[1]), bytes: new Uint8Array(bytes) });
  });
  return found;
}

test("every hex example in docs/protocol.md matches the codec", () => {
  const all = examples();
  assert.ok(all.length >= 10, `only ${all.length} examples`);
  for (const { line, meta, bytes } of all) {
    const config = new PacketConfig({
      byteOrder: meta.order,
      routeBytes: meta.route_bytes,
      seqBytes: meta.seq_bytes,
      maxPacketBytes: meta.max_packet_bytes ?? 65536,
    });
    const at = `docs/protocol.md line ${line}`;
    if (meta.kind === "data") {
      const payload = new TextEncoder().encode(meta.payload);
      assert.deepEqual(config.encodeData(meta.route, meta.seq, payload), bytes, at);
      const frames = config.decoder().push(bytes);
      assert.equal(frames.length, 1, at);
      assert.equal(frames[0].route, meta.route, at);
      assert.equal(frames[0].seq, meta.seq, at);
      assert.equal(new TextDecoder().decode(frames[0].payload), meta.payload, at);
    } else if (meta.kind === "heartbeat") {
      const time = meta.time === undefined ? undefined : BigInt(meta.time);
      assert.deepEqual(config.encodeHeartbeat(meta.extcode, time), bytes, at);
      const expected = { kind: "heartbeat", extcode: meta.extcode, ...(time === undefined ? {} : { serverTimeNanos: time }) };
      assert.deepEqual(config.parseMessage(bytes), expected, at);
    } else if (meta.kind === "oversize") {
      assert.throws(() => config.decoder().push(bytes), ProtocolError, at);
      assert.equal(config.readSize(bytes), meta.size, at);
    } else {
      assert.fail(`${at}: unknown kind ${meta.kind}`);
    }
  }
});
