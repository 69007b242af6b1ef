/**
 * The client: requests matched by seq with timeouts, typed pushes by route, heartbeats, and reconnection
 * with backoff that honours the gate's reconnect-elsewhere signal and runs the game's login again.
 * @module
 */

import { EXTCODE_RECONNECT_ELSEWHERE, type Frame, PacketConfig, type PacketOptions } from "./codec.js";
import {
  ClientClosedError,
  ConnectError,
  ConnectionLostError,
  LoginError,
  SeqExhaustedError,
  SwitchyardError,
  TimeoutError,
} from "./errors.js";
import { Emitter, type Unsubscribe } from "./events.js";
import type { Connection, Dialer } from "./transport.js";

/** Turns payloads into bytes and back. The default is JSON, as the demo game uses. */
export interface PayloadCodec {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

/** UTF-8 JSON payloads. */
export const jsonCodec: PayloadCodec = {
  encode: (value) => new TextEncoder().encode(JSON.stringify(value)),
  decode: (bytes) => JSON.parse(new TextDecoder().decode(bytes)),
};

/** Reconnection after a lost connection. Delays grow from `initialDelayMs` by `factor` up to `maxDelayMs`. */
export interface ReconnectOptions {
  /** Default 250 ms. */
  initialDelayMs?: number;
  /** Default 5000 ms. */
  maxDelayMs?: number;
  /** Default 2. */
  factor?: number;
  /** Each delay is varied by up to this fraction, so that many clients do not come back at once. Default 0.2. */
  jitter?: number;
  /** Attempts before the client gives up and closes; default unlimited. */
  maxAttempts?: number;
}

/** What the `onConnect` hook gets: requests on the new connection, before the client is ready. */
export interface Session {
  /** Where the new connection goes. */
  readonly target: string;
  /** Whether this is a reconnection (false for the first connection). */
  readonly reconnect: boolean;
  /** A request on the new connection, encoded with the client's codec. */
  request<T = unknown>(route: number, value?: unknown, options?: RequestOptions): Promise<T>;
}

/** Options of {@link Client.connect}. Packet settings must match the gate's. */
export interface ClientOptions extends PacketOptions {
  /** How to connect: a dialer (`webSocket(url)`, `tcp(host, port)`) or several, tried in turn on reconnection. */
  dial: Dialer | Dialer[];
  /** Default timeout of a request, queueing for a connection included. Default 10000 ms. */
  requestTimeoutMs?: number;
  /** Limit on opening a connection. Default 10000 ms. */
  connectTimeoutMs?: number;
  /**
   * Send a heartbeat this often (due's client default: 10000 ms). A gate in `resp` mode answers each; a gate
   * closes a connection silent for twice its own interval. 0 sends none.
   */
  heartbeatIntervalMs?: number;
  /** Drop the connection (and reconnect) when nothing arrives for this long. Default 0: never. */
  deadAfterMs?: number;
  /** Payload codec; default JSON. */
  codec?: PayloadCodec;
  /**
   * Runs after every connection opens, before requests queued by the application go out: the game's login.
   * When it throws on a reconnection, the connection is closed and the client tries again with backoff.
   */
  onConnect?: (session: Session) => Promise<void> | void;
  /** Reconnect after a lost connection or a reconnect-elsewhere signal; `false` to close instead. */
  reconnect?: ReconnectOptions | false;
}

/** Options of one request. */
export interface RequestOptions {
  /** Overrides the client's `requestTimeoutMs`. */
  timeoutMs?: number;
}

/** A push as delivered to {@link Client.onAnyPush}. */
export interface RawPush {
  route: number;
  payload: Uint8Array;
}

/** The client's events. */
export interface ClientEvents {
  [name: string]: unknown;
  /** A connection is open and its `onConnect` hook succeeded. */
  connected: { target: string; reconnect: boolean };
  /** The current connection ended (the client reconnects unless closed or told not to). */
  disconnected: { target: string; error?: Error };
  /** A reconnection attempt is scheduled. */
  reconnecting: { attempt: number; delayMs: number; error?: Error };
  /** The gate said it is going away; the client is moving to a new connection. */
  "reconnect-elsewhere": { target: string };
  /** A heartbeat arrived, with the server time when the gate attaches it (`--heartbeat-time`). */
  heartbeat: { extcode: number; serverTimeNanos?: bigint };
  /** A WebSocket message that was not one packet was dropped. */
  malformed: { error: Error };
  /** The client is closed for good: by `close()`, or because reconnection gave up. */
  closed: { error?: Error };
}

/** The client's state. */
export type ClientState = "connected" | "reconnecting" | "closed";

interface Pending {
  route: number;
  resolve: (payload: Uint8Array) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** One connection and the requests in flight on it. */
class Link {
  readonly pending = new Map<number, Pending>();
  /** Without a seq field, responses are matched first-in first-out per route. */
  readonly fifo = new Map<number, Pending[]>();
  nextSeq = 1;
  lastReceived = Date.now();
  leaving = false;
  timers: ReturnType<typeof setInterval>[] = [];
  connection!: Connection;

  failAll(error: Error): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this.pending.clear();
    for (const queue of this.fifo.values()) {
      for (const p of queue) {
        clearTimeout(p.timer);
        p.reject(error);
      }
    }
    this.fifo.clear();
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
  }
}

interface Waiting {
  route: number;
  payload: Uint8Array;
  deadline: number;
  timeoutMs: number;
  resolve: (payload: Uint8Array) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A connection to a Switchyard (or due) gate that survives reconnections.
 *
 * `Pushes` maps push routes to their payload types, e.g. `Client<{ 6: ChatLine; 8: Kicked }>`.
 */
export class Client<Pushes extends { [route: number]: unknown } = { [route: number]: unknown }> extends Emitter<ClientEvents> {
  /** The packet settings in use. */
  readonly config: PacketConfig;
  private readonly dialers: Dialer[];
  private readonly options: ClientOptions;
  private readonly codec: PayloadCodec;
  private readonly pushHandlers = new Map<number, Set<(value: never, raw: Uint8Array) => void>>();
  private readonly anyPush = new Set<(push: RawPush) => void>();
  private link: Link | undefined;
  private waiting: Waiting[] = [];
  private dialIndex = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private reconnecting = false;
  private closedFlag = false;
  private lastServerTime: bigint | undefined;
  /** Counters, for tests and dashboards. */
  readonly stats = { reconnects: 0, pushes: 0, heartbeats: 0, malformed: 0, unmatched: 0 };

  private constructor(options: ClientOptions) {
    super();
    this.config = new PacketConfig(options);
    this.dialers = Array.isArray(options.dial) ? [...options.dial] : [options.dial];
    if (this.dialers.length === 0) throw new ConnectError("(none)", "no dialer given");
    this.options = options;
    this.codec = options.codec ?? jsonCodec;
  }

  /**
   * Opens the first connection (each dialer in turn until one answers) and runs `onConnect` on it.
   * @throws {ConnectError} no dialer could connect. {@link LoginError} the `onConnect` hook failed.
   */
  static async connect<P extends { [route: number]: unknown } = { [route: number]: unknown }>(
    options: ClientOptions,
  ): Promise<Client<P>> {
    const client = new Client<P>(options);
    let lastError: unknown;
    for (let i = 0; i < client.dialers.length; i++) {
      try {
        await client.open(false);
        return client;
      } catch (err) {
        lastError = err;
        if (err instanceof LoginError) break;
      }
    }
    client.closedFlag = true;
    throw lastError;
  }

  /** `connected`, `reconnecting` (requests wait for the new connection) or `closed`. */
  get state(): ClientState {
    if (this.closedFlag) return "closed";
    return this.link !== undefined && !this.link.leaving && !this.reconnecting ? "connected" : "reconnecting";
  }

  /** The target of the current connection. */
  get target(): string | undefined {
    return this.link?.connection.target;
  }

  /** The server time of the last heartbeat that carried one (nanoseconds since the Unix epoch). */
  get serverTimeNanos(): bigint | undefined {
    return this.lastServerTime;
  }

  /**
   * Sends `value` (encoded with the codec) on `route` and resolves with the decoded response.
   * @throws {TimeoutError} {@link ConnectionLostError} {@link ClientClosedError} {@link EncodeError}
   */
  async request<T = unknown>(route: number, value: unknown = {}, options: RequestOptions = {}): Promise<T> {
    const reply = await this.requestRaw(route, this.codec.encode(value), options);
    return this.codec.decode(reply) as T;
  }

  /** As {@link request}, with raw payload bytes both ways. */
  requestRaw(route: number, payload: Uint8Array, options: RequestOptions = {}): Promise<Uint8Array> {
    if (this.closedFlag) return Promise.reject(new ClientClosedError());
    const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs ?? 10_000;
    // Check the packet fits before queueing, so a caller error is reported at once.
    this.config.encodeData(route, 0, payload);
    const link = this.link;
    if (link !== undefined && this.state === "connected") {
      return this.sendRequest(link, route, payload, timeoutMs);
    }
    return new Promise((resolve, reject) => {
      const waiting: Waiting = {
        route,
        payload,
        timeoutMs,
        deadline: Date.now() + timeoutMs,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiting = this.waiting.filter((w) => w !== waiting);
          reject(new TimeoutError(route, timeoutMs));
        }, timeoutMs),
      };
      this.waiting.push(waiting);
    });
  }

  /** Sends `value` on `route` with seq 0, expecting no answer. Dropped when not connected. */
  send(route: number, value: unknown = {}): void {
    if (this.closedFlag) throw new ClientClosedError();
    const packet = this.config.encodeData(route, 0, this.codec.encode(value));
    if (this.state === "connected") this.link?.connection.send(packet);
  }

  /** Calls `handler` with every push on `route`, decoded with the codec. */
  onPush<R extends keyof Pushes & number>(route: R, handler: (value: Pushes[R], raw: Uint8Array) => void): Unsubscribe {
    let set = this.pushHandlers.get(route);
    if (set === undefined) {
      set = new Set();
      this.pushHandlers.set(route, set);
    }
    const entry = handler as (value: never, raw: Uint8Array) => void;
    set.add(entry);
    return () => set.delete(entry);
  }

  /** Calls `handler` with every push, undecoded. */
  onAnyPush(handler: (push: RawPush) => void): Unsubscribe {
    this.anyPush.add(handler);
    return () => this.anyPush.delete(handler);
  }

  /** Closes the client: the connection, the requests waiting, any reconnection. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    clearTimeout(this.reconnectTimer);
    const error = new ClientClosedError();
    this.failWaiting(error);
    const link = this.link;
    this.link = undefined;
    if (link !== undefined) {
      link.failAll(error);
      link.connection.close();
    }
    this.emit("closed", {});
  }

  // ------------------------------------------------------------------------------------------ internals

  /** Opens a connection with the next dialer and runs the login hook on it; makes it current on success. */
  private async open(reconnect: boolean): Promise<void> {
    const dial = this.dialers[this.dialIndex % this.dialers.length]!;
    this.dialIndex++;
    const link = new Link();
    link.connection = await dial(
      this.config,
      {
        frame: (frame) => this.onFrame(link, frame),
        malformed: (error) => {
          this.stats.malformed++;
          this.emit("malformed", { error });
        },
        closed: (error) => this.onClosed(link, error),
      },
      this.options.connectTimeoutMs ?? 10_000,
    );
    this.startTimers(link);
    const connectedLink = link;
    if (this.options.onConnect !== undefined) {
      const session: Session = {
        target: link.connection.target,
        reconnect,
        request: async <T>(route: number, value: unknown = {}, options: RequestOptions = {}) => {
          const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs ?? 10_000;
          const reply = await this.sendRequest(connectedLink, route, this.codec.encode(value), timeoutMs);
          return this.codec.decode(reply) as T;
        },
      };
      try {
        await this.options.onConnect(session);
      } catch (err) {
        link.leaving = true;
        link.connection.close();
        throw new LoginError({ cause: err });
      }
    }
    if (this.closedFlag) {
      link.connection.close();
      throw new ClientClosedError();
    }
    const previous = this.link;
    this.link = link;
    if (previous !== undefined && previous !== link) previous.leaving = true;
    this.emit("connected", { target: link.connection.target, reconnect });
    this.flushWaiting();
  }

  private startTimers(link: Link): void {
    const heartbeat = this.options.heartbeatIntervalMs ?? 10_000;
    if (heartbeat > 0) {
      const packet = this.config.encodeHeartbeat();
      link.timers.push(setInterval(() => link.connection.send(packet), heartbeat));
    }
    const deadAfter = this.options.deadAfterMs ?? 0;
    if (deadAfter > 0) {
      link.timers.push(
        setInterval(() => {
          if (Date.now() - link.lastReceived > deadAfter) link.connection.close();
        }, Math.max(50, deadAfter / 4)),
      );
    }
  }

  private sendRequest(link: Link, route: number, payload: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      let seq = 0;
      if (this.config.seqBytes > 0) {
        const max = this.config.maxSeq;
        if (link.pending.size >= max) {
          reject(new SeqExhaustedError(link.pending.size));
          return;
        }
        do {
          seq = link.nextSeq;
          link.nextSeq = link.nextSeq >= max ? 1 : link.nextSeq + 1;
        } while (link.pending.has(seq));
      }
      let packet: Uint8Array;
      try {
        packet = this.config.encodeData(route, seq, payload);
      } catch (err) {
        reject(err);
        return;
      }
      const pending: Pending = {
        route,
        resolve,
        reject,
        timer: setTimeout(() => {
          if (this.config.seqBytes > 0) {
            link.pending.delete(seq);
          } else {
            const queue = link.fifo.get(route) ?? [];
            link.fifo.set(route, queue.filter((p) => p !== pending));
          }
          reject(new TimeoutError(route, timeoutMs));
        }, timeoutMs),
      };
      if (this.config.seqBytes > 0) {
        link.pending.set(seq, pending);
      } else {
        const queue = link.fifo.get(route) ?? [];
        queue.push(pending);
        link.fifo.set(route, queue);
      }
      link.connection.send(packet);
    });
  }

  private onFrame(link: Link, frame: Frame): void {
    link.lastReceived = Date.now();
    switch (frame.kind) {
      case "data": {
        const pending = this.takePending(link, frame.route, frame.seq);
        if (pending !== undefined) {
          clearTimeout(pending.timer);
          pending.resolve(frame.payload);
          return;
        }
        if (frame.seq !== 0) {
          // An answer to a request that timed out already.
          this.stats.unmatched++;
          return;
        }
        this.deliverPush(frame.route, frame.payload);
        return;
      }
      case "heartbeat": {
        this.stats.heartbeats++;
        if (frame.serverTimeNanos !== undefined) this.lastServerTime = frame.serverTimeNanos;
        this.emit("heartbeat", { extcode: frame.extcode, serverTimeNanos: frame.serverTimeNanos });
        if (frame.extcode === EXTCODE_RECONNECT_ELSEWHERE && link === this.link && !link.leaving) {
          link.leaving = true;
          this.emit("reconnect-elsewhere", { target: link.connection.target });
          // Move now, without backoff: the old connection keeps serving what is in flight until it closes.
          if (this.options.reconnect !== false) this.scheduleReconnect(0, undefined);
        }
        return;
      }
      default:
        return;
    }
  }

  private takePending(link: Link, route: number, seq: number): Pending | undefined {
    if (this.config.seqBytes > 0) {
      if (seq === 0) return undefined;
      const pending = link.pending.get(seq);
      if (pending !== undefined) link.pending.delete(seq);
      return pending;
    }
    return link.fifo.get(route)?.shift();
  }

  private deliverPush(route: number, payload: Uint8Array): void {
    this.stats.pushes++;
    for (const handler of this.anyPush) handler({ route, payload });
    const handlers = this.pushHandlers.get(route);
    if (handlers === undefined || handlers.size === 0) return;
    let value: unknown;
    try {
      value = this.codec.decode(payload);
    } catch (err) {
      this.emit("malformed", { error: new SwitchyardError(`push on route ${route} does not decode: ${err}`, "server") });
      return;
    }
    for (const handler of handlers) (handler as (value: unknown, raw: Uint8Array) => void)(value, payload);
  }

  private onClosed(link: Link, error?: Error): void {
    link.failAll(new ConnectionLostError(undefined, { cause: error }));
    if (link !== this.link || this.closedFlag) return;
    this.emit("disconnected", { target: link.connection.target, ...(error ? { error } : {}) });
    if (this.reconnecting) return; // already moving (reconnect-elsewhere)
    if (this.options.reconnect === false) {
      this.giveUp(error ?? new ConnectionLostError("the server closed the connection"));
      return;
    }
    this.scheduleReconnect(this.delay(1), error);
  }

  private scheduleReconnect(delayMs: number, error: Error | undefined, attempt = 1): void {
    if (this.closedFlag) return;
    this.reconnecting = true;
    this.emit("reconnecting", { attempt, delayMs, ...(error ? { error } : {}) });
    this.reconnectTimer = setTimeout(async () => {
      try {
        await this.open(true);
        this.reconnecting = false;
        this.stats.reconnects++;
        this.flushWaiting();
      } catch (err) {
        if (this.closedFlag) return;
        const maxAttempts = (this.options.reconnect || {}).maxAttempts ?? Infinity;
        if (attempt >= maxAttempts) {
          this.giveUp(err as Error);
          return;
        }
        this.scheduleReconnect(this.delay(attempt + 1), err as Error, attempt + 1);
      }
    }, delayMs);
  }

  /** The backoff before attempt `attempt` (1-based). */
  private delay(attempt: number): number {
    const options = this.options.reconnect || {};
    const initial = options.initialDelayMs ?? 250;
    const max = options.maxDelayMs ?? 5000;
    const factor = options.factor ?? 2;
    const jitter = options.jitter ?? 0.2;
    const base = Math.min(max, initial * factor ** (attempt - 1));
    return Math.round(base * (1 - jitter + 2 * jitter * Math.random()));
  }

  private giveUp(error: Error): void {
    this.closedFlag = true;
    this.reconnecting = false;
    this.failWaiting(error);
    const link = this.link;
    this.link = undefined;
    link?.connection.close();
    this.emit("closed", { error });
  }

  private flushWaiting(): void {
    const link = this.link;
    if (link === undefined || this.state !== "connected") return;
    const waiting = this.waiting;
    this.waiting = [];
    for (const w of waiting) {
      clearTimeout(w.timer);
      const left = w.deadline - Date.now();
      if (left <= 0) {
        w.reject(new TimeoutError(w.route, w.timeoutMs));
        continue;
      }
      this.sendRequest(link, w.route, w.payload, left).then(w.resolve, w.reject);
    }
  }

  private failWaiting(error: Error): void {
    for (const w of this.waiting) {
      clearTimeout(w.timer);
      w.reject(error);
    }
    this.waiting = [];
  }
}
