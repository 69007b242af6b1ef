// The packet codec alone: every width and byte order, signed ranges, the stream decoder across arbitrary
// read boundaries, and the size check that refuses an oversize packet before buffering it.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ConfigError,
  EncodeError,
  MalformedMessageError,
  PacketConfig,
  ProtocolError,
} from "../../dist/index.js";

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const utf8 = (s) => new TextEncoder().encode(s);

test("every route and seq width round-trips in both byte orders, extremes included", () => {
  for (const byteOrder of ["big", "little"]) {
    for (const routeBytes of [1, 2, 4]) {
      for (const seqBytes of [0, 1, 2, 4]) {
        const config = new PacketConfig({ byteOrder, routeBytes, seqBytes });
        const routes = [0, 1, -1, config.maxRoute, -config.maxRoute - 1];
        const seqs = seqBytes === 0 ? [0] : [0, 1, -1, config.maxSeq, -config.maxSeq - 1];
        for (const route of routes) {
          for (const seq of seqs) {
            const packet = config.encodeData(route, seq, utf8("xyz"));
            assert.equal(packet.length, 4 + 1 + routeBytes + seqBytes + 3);
            const frame = config.parseMessage(packet);
            assert.equal(frame.kind, "data");
            assert.equal(frame.route, route);
            assert.equal(frame.seq, seq);
            assert.equal(new TextDecoder().decode(frame.payload), "xyz");
          }
        }
      }
    }
  }
});

test("byte order decides the layout of size, route and seq", () => {
  const big = new PacketConfig({ byteOrder: "big", routeBytes: 4, seqBytes: 2 });
  const little = new PacketConfig({ byteOrder: "little", routeBytes: 4, seqBytes: 2 });
  assert.equal(hex(big.encodeData(0x01020304, 0x0506)), "00000007" + "00" + "01020304" + "0506");
  assert.equal(hex(little.encodeData(0x01020304, 0x0506)), "07000000" + "00" + "04030201" + "0605");
});

test("values outside the signed range of their width are refused before sending", () => {
  const config = new PacketConfig({ routeBytes: 1, seqBytes: 2 });
  assert.throws(() => config.encodeData(128, 1), EncodeError);
  assert.throws(() => config.encodeData(-129, 1), EncodeError);
  assert.throws(() => config.encodeData(1, 32768), EncodeError);
  assert.throws(() => config.encodeData(1.5, 1), EncodeError);
  const noSeq = new PacketConfig({ seqBytes: 0 });
  assert.throws(() => noSeq.encodeData(1, 1), /seq 1 does not fit a signed 0-byte field/);
});

test("a packet over the maximum is refused when encoding", () => {
  const config = new PacketConfig({ maxPacketBytes: 20 });
  config.encodeData(1, 1, new Uint8Array(15)); // 1 + 2 + 2 + 15 = 20: fits exactly
  assert.throws(() => config.encodeData(1, 1, new Uint8Array(16)), /21 bytes exceeds the maximum of 20/);
});

test("settings due does not allow are refused with a clear message", () => {
  assert.throws(() => new PacketConfig({ routeBytes: 3 }), (err) => err instanceof ConfigError && /route width 3/.test(err.message));
  assert.throws(() => new PacketConfig({ seqBytes: 8 }), /seq width 8 bytes is not one of: 0, 1, 2, 4/);
  assert.throws(() => new PacketConfig({ byteOrder: "middle" }), /byte order "middle"/);
  assert.throws(() => new PacketConfig({ maxPacketBytes: 4 }), ConfigError);
  assert.equal(new ConfigError("x").fault, "caller");
});

test("heartbeats: header alone, with server time, extcodes", () => {
  const config = new PacketConfig();
  assert.equal(hex(config.encodeHeartbeat()), "0000000180");
  assert.equal(hex(config.encodeHeartbeat(1)), "0000000181");
  const withTime = config.encodeHeartbeat(0, -2n);
  assert.equal(hex(withTime), "0000000980fffffffffffffffe");
  assert.deepEqual(config.parseMessage(withTime), { kind: "heartbeat", extcode: 0, serverTimeNanos: -2n });
  // Receivers look at bit 7 only, whatever the length.
  assert.deepEqual(config.parseBody(new Uint8Array([0x81, 1, 2])), { kind: "heartbeat", extcode: 1 });
});

test("empty and short packets are classified, not thrown", () => {
  const config = new PacketConfig();
  assert.deepEqual(config.parseBody(new Uint8Array(0)), { kind: "empty" });
  assert.deepEqual(config.parseBody(new Uint8Array([0, 0, 1])), { kind: "short", size: 3 });
});

test("the stream decoder handles one byte at a time and many packets per read", () => {
  const config = new PacketConfig({ byteOrder: "little", routeBytes: 2, seqBytes: 4 });
  const packets = [
    config.encodeData(1, 1, utf8("first")),
    config.encodeHeartbeat(0, 123n),
    config.encodeData(6, 0, utf8("")),
    new Uint8Array(4), // a zero-size packet
    config.encodeData(-3, -7, utf8("last")),
  ];
  const stream = Buffer.concat(packets);
  for (const step of [1, 2, 3, 7, stream.length]) {
    const decoder = config.decoder();
    const frames = [];
    for (let i = 0; i < stream.length; i += step) {
      frames.push(...decoder.push(new Uint8Array(stream.subarray(i, i + step))));
    }
    assert.deepEqual(
      frames.map((f) => f.kind),
      ["data", "heartbeat", "data", "empty", "data"],
      `read size ${step}`,
    );
    assert.equal(frames[1].serverTimeNanos, 123n);
    assert.deepEqual([frames[4].route, frames[4].seq], [-3, -7]);
    assert.equal(decoder.pending, 0);
  }
});

test("an oversize announcement is refused from its size field alone, before buffering", () => {
  const config = new PacketConfig({ maxPacketBytes: 1024 });
  const decoder = config.decoder();
  // 4 GiB - 1 announced: the decoder must throw at once, with only the size field received.
  assert.throws(() => decoder.push(new Uint8Array([0xff, 0xff, 0xff, 0xff])), (err) =>
    err instanceof ProtocolError && err.fault === "server" && /4294967295 bytes, over the maximum of 1024/.test(err.message));
  // Exactly the maximum is fine and waits for the rest.
  const ok = config.decoder();
  assert.deepEqual(ok.push(new Uint8Array([0, 0, 4, 0, 0])), []);
  assert.equal(ok.pending, 5);
});

test("WebSocket messages must be exactly one packet", () => {
  const config = new PacketConfig();
  const packet = config.encodeData(1, 1, utf8("hi"));
  assert.throws(() => config.parseMessage(packet.subarray(0, 3)), MalformedMessageError);
  assert.throws(() => config.parseMessage(packet.subarray(0, packet.length - 1)), /does not hold exactly the one packet/);
  assert.throws(() => config.parseMessage(Buffer.concat([packet, packet])), MalformedMessageError);
  assert.throws(() => config.parseMessage(new Uint8Array([0, 1, 0, 1])), ProtocolError);
});
