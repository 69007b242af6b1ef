/**
 * The due packet codec, byte for byte as `docs/protocol.md` describes it:
 *
 * ```text
 * data:      | size u32 | header u8 | route (1|2|4 B) | seq (0|1|2|4 B) | payload ... |
 * heartbeat: | size u32 | header u8 | [server time i64 ns, downlink only, optional] |
 * ```
 *
 * `size` counts the bytes after itself. The stream decoder reads the size field first and refuses a size
 * over the maximum before it buffers a single byte of that packet, so a hostile size cannot make it allocate.
 * @module
 */

import { ConfigError, EncodeError, MalformedMessageError, ProtocolError } from "./errors.js";

/** Bytes of the size field in front of every packet. */
export const SIZE_FIELD_BYTES = 4;
/** Header bit that marks a heartbeat. */
export const HEARTBEAT_BIT = 0x80;
/** Header bits that carry the extcode. */
export const EXTCODE_MASK = 0x7f;
/** Extcode of a downlink heartbeat that says: this server is going away, reconnect (to any gate). */
export const EXTCODE_RECONNECT_ELSEWHERE = 0x01;
/** Default cap on the size field: 64 KiB, as `switchyard dev`. */
export const DEFAULT_MAX_PACKET_BYTES = 65536;

/** Byte order of the size, route, seq and heartbeat-time fields. */
export type ByteOrder = "big" | "little";

/** Packet settings shared by client, gate and node. Every field is optional; defaults are due's. */
export interface PacketOptions {
  /** Default `"big"`. */
  byteOrder?: ByteOrder;
  /** 1, 2 or 4; default 2. */
  routeBytes?: 1 | 2 | 4;
  /** 0, 1, 2 or 4; default 2. 0 removes the seq field. */
  seqBytes?: 0 | 1 | 2 | 4;
  /** Largest size field accepted or sent; default 65536. */
  maxPacketBytes?: number;
}

/** One decoded packet. */
export type Frame =
  | { kind: "empty" }
  | { kind: "heartbeat"; extcode: number; serverTimeNanos?: bigint }
  | { kind: "data"; route: number; seq: number; extcode: number; payload: Uint8Array }
  /** A data packet shorter than header + route + seq: dropped by receivers. */
  | { kind: "short"; size: number };

const HEARTBEAT_WITH_TIME_BYTES = 9;

/** Validated packet settings and the encoder/decoder for them. */
export class PacketConfig {
  readonly byteOrder: ByteOrder;
  readonly routeBytes: 1 | 2 | 4;
  readonly seqBytes: 0 | 1 | 2 | 4;
  readonly maxPacketBytes: number;
  private readonly little: boolean;

  /** @throws {ConfigError} a width due does not allow, or a maximum too small for a data header. */
  constructor(options: PacketOptions = {}) {
    const byteOrder = options.byteOrder ?? "big";
    const routeBytes = options.routeBytes ?? 2;
    const seqBytes = options.seqBytes ?? 2;
    const maxPacketBytes = options.maxPacketBytes ?? DEFAULT_MAX_PACKET_BYTES;
    if (byteOrder !== "big" && byteOrder !== "little") {
      throw new ConfigError(`byte order ${JSON.stringify(byteOrder)} is not one of: big, little`);
    }
    if (![1, 2, 4].includes(routeBytes)) {
      throw new ConfigError(`route width ${routeBytes} bytes is not one of: 1, 2, 4`);
    }
    if (![0, 1, 2, 4].includes(seqBytes)) {
      throw new ConfigError(`seq width ${seqBytes} bytes is not one of: 0, 1, 2, 4`);
    }
    const min = Math.max(1 + routeBytes + seqBytes, HEARTBEAT_WITH_TIME_BYTES);
    if (!Number.isInteger(maxPacketBytes) || maxPacketBytes < min || maxPacketBytes > 0xffffffff) {
      throw new ConfigError(
        `maximum packet size ${maxPacketBytes} bytes is not an integer between ${min} and 4294967295`,
      );
    }
    this.byteOrder = byteOrder;
    this.routeBytes = routeBytes;
    this.seqBytes = seqBytes;
    this.maxPacketBytes = maxPacketBytes;
    this.little = byteOrder === "little";
  }

  /** Header byte + route + seq: the smallest body of a data packet. */
  get dataHeaderBytes(): number {
    return 1 + this.routeBytes + this.seqBytes;
  }

  /** The largest seq the seq field can carry (0 without a seq field). */
  get maxSeq(): number {
    return maxSigned(this.seqBytes);
  }

  /** The largest route the route field can carry. */
  get maxRoute(): number {
    return maxSigned(this.routeBytes);
  }

  /**
   * One data packet, size field included.
   * @throws {EncodeError} route or seq outside the signed range of its width, or a packet over the maximum.
   */
  encodeData(route: number, seq: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
    if (!fitsSigned(route, this.routeBytes)) {
      throw new EncodeError(`route ${route} does not fit a signed ${this.routeBytes}-byte field`);
    }
    if (!fitsSigned(seq, this.seqBytes)) {
      throw new EncodeError(`seq ${seq} does not fit a signed ${this.seqBytes}-byte field`);
    }
    const size = this.dataHeaderBytes + payload.length;
    if (size > this.maxPacketBytes) {
      throw new EncodeError(`packet of ${size} bytes exceeds the maximum of ${this.maxPacketBytes} bytes`);
    }
    const out = new Uint8Array(SIZE_FIELD_BYTES + size);
    const view = new DataView(out.buffer);
    view.setUint32(0, size, this.little);
    out[4] = 0;
    this.putInt(view, 5, route, this.routeBytes);
    this.putInt(view, 5 + this.routeBytes, seq, this.seqBytes);
    out.set(payload, SIZE_FIELD_BYTES + this.dataHeaderBytes);
    return out;
  }

  /** One heartbeat: the header alone, or with a server time in nanoseconds (downlink). */
  encodeHeartbeat(extcode = 0, serverTimeNanos?: bigint): Uint8Array {
    const header = HEARTBEAT_BIT | (extcode & EXTCODE_MASK);
    if (serverTimeNanos === undefined) {
      const out = new Uint8Array(SIZE_FIELD_BYTES + 1);
      new DataView(out.buffer).setUint32(0, 1, this.little);
      out[4] = header;
      return out;
    }
    const out = new Uint8Array(SIZE_FIELD_BYTES + HEARTBEAT_WITH_TIME_BYTES);
    const view = new DataView(out.buffer);
    view.setUint32(0, HEARTBEAT_WITH_TIME_BYTES, this.little);
    out[4] = header;
    view.setBigInt64(5, BigInt.asIntN(64, serverTimeNanos), this.little);
    return out;
  }

  /** Classifies the body of one packet (everything after the size field). Never throws. */
  parseBody(body: Uint8Array): Frame {
    if (body.length === 0) return { kind: "empty" };
    const header = body[0]!;
    const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
    if (header & HEARTBEAT_BIT) {
      const extcode = header & EXTCODE_MASK;
      if (body.length >= HEARTBEAT_WITH_TIME_BYTES) {
        return { kind: "heartbeat", extcode, serverTimeNanos: view.getBigInt64(1, this.little) };
      }
      return { kind: "heartbeat", extcode };
    }
    if (body.length < this.dataHeaderBytes) return { kind: "short", size: body.length };
    return {
      kind: "data",
      route: this.getInt(view, 1, this.routeBytes),
      seq: this.getInt(view, 1 + this.routeBytes, this.seqBytes),
      extcode: header & EXTCODE_MASK,
      payload: body.subarray(this.dataHeaderBytes),
    };
  }

  /**
   * Parses a WebSocket binary message, which must hold exactly one whole packet, size field included.
   * @throws {ProtocolError} an announced size over the maximum.
   * @throws {MalformedMessageError} a message shorter than a size field or not exactly one packet long.
   */
  parseMessage(message: Uint8Array): Frame {
    if (message.length < SIZE_FIELD_BYTES) {
      throw new MalformedMessageError(`message of ${message.length} bytes is shorter than a size field`);
    }
    const size = this.readSize(message);
    if (size > this.maxPacketBytes) {
      throw new ProtocolError(`peer announced a packet of ${size} bytes, over the maximum of ${this.maxPacketBytes} bytes`);
    }
    if (message.length - SIZE_FIELD_BYTES !== size) {
      throw new MalformedMessageError(
        `message of ${message.length} bytes does not hold exactly the one packet of ${size} bytes it announces`,
      );
    }
    return this.parseBody(message.subarray(SIZE_FIELD_BYTES));
  }

  /** A streaming decoder for a byte stream (TCP) with these settings. */
  decoder(): StreamDecoder {
    return new StreamDecoder(this);
  }

  /** Reads the size field at the start of `bytes` (at least 4 bytes). */
  readSize(bytes: Uint8Array): number {
    return new DataView(bytes.buffer, bytes.byteOffset, SIZE_FIELD_BYTES).getUint32(0, this.little);
  }

  private putInt(view: DataView, offset: number, value: number, width: number): void {
    switch (width) {
      case 0:
        return;
      case 1:
        view.setInt8(offset, value);
        return;
      case 2:
        view.setInt16(offset, value, this.little);
        return;
      default:
        view.setInt32(offset, value, this.little);
    }
  }

  private getInt(view: DataView, offset: number, width: number): number {
    switch (width) {
      case 0:
        return 0;
      case 1:
        return view.getInt8(offset);
      case 2:
        return view.getInt16(offset, this.little);
      default:
        return view.getInt32(offset, this.little);
    }
  }
}

/**
 * Splits a byte stream into packets: partial reads, many packets per read. Holds at most one announced
 * packet (within the maximum) plus one read's worth of bytes.
 */
export class StreamDecoder {
  private readonly config: PacketConfig;
  private chunks: Uint8Array[] = [];
  private buffered = 0;

  constructor(config: PacketConfig) {
    this.config = config;
  }

  /** Bytes waiting for the rest of their packet. */
  get pending(): number {
    return this.buffered;
  }

  /**
   * Adds received bytes and returns every packet they complete.
   * @throws {ProtocolError} the peer announced a packet over the maximum; the stream cannot go on.
   */
  push(chunk: Uint8Array): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < SIZE_FIELD_BYTES) return frames;
      const size = this.config.readSize(this.peek(SIZE_FIELD_BYTES));
      if (size > this.config.maxPacketBytes) {
        throw new ProtocolError(
          `peer announced a packet of ${size} bytes, over the maximum of ${this.config.maxPacketBytes} bytes`,
        );
      }
      if (this.buffered < SIZE_FIELD_BYTES + size) return frames;
      this.take(SIZE_FIELD_BYTES);
      frames.push(this.config.parseBody(this.take(size)));
    }
  }

  /** The first `n` bytes without consuming them (n <= buffered). */
  private peek(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    return this.gather(n, false);
  }

  /** Removes and returns the first `n` bytes (n <= buffered). */
  private take(n: number): Uint8Array {
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return out;
    }
    return this.gather(n, true);
  }

  private gather(n: number, consume: boolean): Uint8Array {
    const out = new Uint8Array(n);
    let filled = 0;
    let index = 0;
    while (filled < n) {
      const chunk = this.chunks[index]!;
      const part = Math.min(chunk.length, n - filled);
      out.set(chunk.subarray(0, part), filled);
      filled += part;
      if (consume) {
        if (part === chunk.length) this.chunks.shift();
        else this.chunks[0] = chunk.subarray(part);
      } else {
        index++;
      }
    }
    if (consume) this.buffered -= n;
    return out;
  }
}

function maxSigned(bytes: number): number {
  return bytes === 0 ? 0 : 2 ** (bytes * 8 - 1) - 1;
}

function fitsSigned(value: number, bytes: number): boolean {
  if (!Number.isInteger(value)) return false;
  if (bytes === 0) return value === 0;
  const max = maxSigned(bytes);
  return value >= -max - 1 && value <= max;
}
