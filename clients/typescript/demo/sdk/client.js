/**
 * The client: requests matched by seq with timeouts, typed pushes by route, heartbeats, and reconnection
 * with backoff that honours the gate's reconnect-elsewhere signal and runs the game's login again.
 * @module
 */
import { EXTCODE_RECONNECT_ELSEWHERE, PacketConfig } from "./codec.js";
import { ClientClosedError, ConnectError, ConnectionLostError, LoginError, SeqExhaustedError, SwitchyardError, TimeoutError, } from "./errors.js";
import { Emitter } from "./events.js";
/** UTF-8 JSON payloads. */
export const jsonCodec = {
    encode: (value) => new TextEncoder().encode(JSON.stringify(value)),
    decode: (bytes) => JSON.parse(new TextDecoder().decode(bytes)),
};
/** One connection and the requests in flight on it. */
class Link {
    pending = new Map();
    /** Without a seq field, responses are matched first-in first-out per route. */
    fifo = new Map();
    nextSeq = 1;
    lastReceived = Date.now();
    leaving = false;
    timers = [];
    connection;
    failAll(error) {
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
        for (const timer of this.timers)
            clearInterval(timer);
        this.timers = [];
    }
}
/**
 * A connection to a Switchyard (or due) gate that survives reconnections.
 *
 * `Pushes` maps push routes to their payload types, e.g. `Client<{ 6: ChatLine; 8: Kicked }>`.
 */
export class Client extends Emitter {
    /** The packet settings in use. */
    config;
    dialers;
    options;
    codec;
    pushHandlers = new Map();
    anyPush = new Set();
    link;
    waiting = [];
    dialIndex = 0;
    reconnectTimer;
    reconnecting = false;
    closedFlag = false;
    lastServerTime;
    /** Counters, for tests and dashboards. */
    stats = { reconnects: 0, pushes: 0, heartbeats: 0, malformed: 0, unmatched: 0 };
    constructor(options) {
        super();
        this.config = new PacketConfig(options);
        this.dialers = Array.isArray(options.dial) ? [...options.dial] : [options.dial];
        if (this.dialers.length === 0)
            throw new ConnectError("(none)", "no dialer given");
        this.options = options;
        this.codec = options.codec ?? jsonCodec;
    }
    /**
     * Opens the first connection (each dialer in turn until one answers) and runs `onConnect` on it.
     * @throws {ConnectError} no dialer could connect. {@link LoginError} the `onConnect` hook failed.
     */
    static async connect(options) {
        const client = new Client(options);
        let lastError;
        for (let i = 0; i < client.dialers.length; i++) {
            try {
                await client.open(false);
                return client;
            }
            catch (err) {
                lastError = err;
                if (err instanceof LoginError)
                    break;
            }
        }
        client.closedFlag = true;
        throw lastError;
    }
    /** `connected`, `reconnecting` (requests wait for the new connection) or `closed`. */
    get state() {
        if (this.closedFlag)
            return "closed";
        return this.link !== undefined && !this.link.leaving && !this.reconnecting ? "connected" : "reconnecting";
    }
    /** The target of the current connection. */
    get target() {
        return this.link?.connection.target;
    }
    /** The server time of the last heartbeat that carried one (nanoseconds since the Unix epoch). */
    get serverTimeNanos() {
        return this.lastServerTime;
    }
    /**
     * Sends `value` (encoded with the codec) on `route` and resolves with the decoded response.
     * @throws {TimeoutError} {@link ConnectionLostError} {@link ClientClosedError} {@link EncodeError}
     */
    async request(route, value = {}, options = {}) {
        const reply = await this.requestRaw(route, this.codec.encode(value), options);
        return this.codec.decode(reply);
    }
    /** As {@link request}, with raw payload bytes both ways. */
    requestRaw(route, payload, options = {}) {
        if (this.closedFlag)
            return Promise.reject(new ClientClosedError());
        const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs ?? 10_000;
        // Check the packet fits before queueing, so a caller error is reported at once.
        this.config.encodeData(route, 0, payload);
        const link = this.link;
        if (link !== undefined && this.state === "connected") {
            return this.sendRequest(link, route, payload, timeoutMs);
        }
        return new Promise((resolve, reject) => {
            const waiting = {
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
    send(route, value = {}) {
        if (this.closedFlag)
            throw new ClientClosedError();
        const packet = this.config.encodeData(route, 0, this.codec.encode(value));
        if (this.state === "connected")
            this.link?.connection.send(packet);
    }
    /** Calls `handler` with every push on `route`, decoded with the codec. */
    onPush(route, handler) {
        let set = this.pushHandlers.get(route);
        if (set === undefined) {
            set = new Set();
            this.pushHandlers.set(route, set);
        }
        const entry = handler;
        set.add(entry);
        return () => set.delete(entry);
    }
    /** Calls `handler` with every push, undecoded. */
    onAnyPush(handler) {
        this.anyPush.add(handler);
        return () => this.anyPush.delete(handler);
    }
    /** Closes the client: the connection, the requests waiting, any reconnection. */
    close() {
        if (this.closedFlag)
            return;
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
    async open(reconnect) {
        const dial = this.dialers[this.dialIndex % this.dialers.length];
        this.dialIndex++;
        const link = new Link();
        link.connection = await dial(this.config, {
            frame: (frame) => this.onFrame(link, frame),
            malformed: (error) => {
                this.stats.malformed++;
                this.emit("malformed", { error });
            },
            closed: (error) => this.onClosed(link, error),
        }, this.options.connectTimeoutMs ?? 10_000);
        this.startTimers(link);
        const connectedLink = link;
        if (this.options.onConnect !== undefined) {
            const session = {
                target: link.connection.target,
                reconnect,
                request: async (route, value = {}, options = {}) => {
                    const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs ?? 10_000;
                    const reply = await this.sendRequest(connectedLink, route, this.codec.encode(value), timeoutMs);
                    return this.codec.decode(reply);
                },
            };
            try {
                await this.options.onConnect(session);
            }
            catch (err) {
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
        if (previous !== undefined && previous !== link)
            previous.leaving = true;
        this.emit("connected", { target: link.connection.target, reconnect });
        this.flushWaiting();
    }
    startTimers(link) {
        const heartbeat = this.options.heartbeatIntervalMs ?? 10_000;
        if (heartbeat > 0) {
            const packet = this.config.encodeHeartbeat();
            link.timers.push(setInterval(() => link.connection.send(packet), heartbeat));
        }
        const deadAfter = this.options.deadAfterMs ?? 0;
        if (deadAfter > 0) {
            link.timers.push(setInterval(() => {
                if (Date.now() - link.lastReceived > deadAfter)
                    link.connection.close();
            }, Math.max(50, deadAfter / 4)));
        }
    }
    sendRequest(link, route, payload, timeoutMs) {
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
            let packet;
            try {
                packet = this.config.encodeData(route, seq, payload);
            }
            catch (err) {
                reject(err);
                return;
            }
            const pending = {
                route,
                resolve,
                reject,
                timer: setTimeout(() => {
                    if (this.config.seqBytes > 0) {
                        link.pending.delete(seq);
                    }
                    else {
                        const queue = link.fifo.get(route) ?? [];
                        link.fifo.set(route, queue.filter((p) => p !== pending));
                    }
                    reject(new TimeoutError(route, timeoutMs));
                }, timeoutMs),
            };
            if (this.config.seqBytes > 0) {
                link.pending.set(seq, pending);
            }
            else {
                const queue = link.fifo.get(route) ?? [];
                queue.push(pending);
                link.fifo.set(route, queue);
            }
            link.connection.send(packet);
        });
    }
    onFrame(link, frame) {
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
                if (frame.serverTimeNanos !== undefined)
                    this.lastServerTime = frame.serverTimeNanos;
                this.emit("heartbeat", { extcode: frame.extcode, serverTimeNanos: frame.serverTimeNanos });
                if (frame.extcode === EXTCODE_RECONNECT_ELSEWHERE && link === this.link && !link.leaving) {
                    link.leaving = true;
                    this.emit("reconnect-elsewhere", { target: link.connection.target });
                    // Move now, without backoff: the old connection keeps serving what is in flight until it closes.
                    if (this.options.reconnect !== false)
                        this.scheduleReconnect(0, undefined);
                }
                return;
            }
            default:
                return;
        }
    }
    takePending(link, route, seq) {
        if (this.config.seqBytes > 0) {
            if (seq === 0)
                return undefined;
            const pending = link.pending.get(seq);
            if (pending !== undefined)
                link.pending.delete(seq);
            return pending;
        }
        return link.fifo.get(route)?.shift();
    }
    deliverPush(route, payload) {
        this.stats.pushes++;
        for (const handler of this.anyPush)
            handler({ route, payload });
        const handlers = this.pushHandlers.get(route);
        if (handlers === undefined || handlers.size === 0)
            return;
        let value;
        try {
            value = this.codec.decode(payload);
        }
        catch (err) {
            this.emit("malformed", { error: new SwitchyardError(`push on route ${route} does not decode: ${err}`, "server") });
            return;
        }
        for (const handler of handlers)
            handler(value, payload);
    }
    onClosed(link, error) {
        link.failAll(new ConnectionLostError(undefined, { cause: error }));
        if (link !== this.link || this.closedFlag)
            return;
        this.emit("disconnected", { target: link.connection.target, ...(error ? { error } : {}) });
        if (this.reconnecting)
            return; // already moving (reconnect-elsewhere)
        if (this.options.reconnect === false) {
            this.giveUp(error ?? new ConnectionLostError("the server closed the connection"));
            return;
        }
        this.scheduleReconnect(this.delay(1), error);
    }
    scheduleReconnect(delayMs, error, attempt = 1) {
        if (this.closedFlag)
            return;
        this.reconnecting = true;
        this.emit("reconnecting", { attempt, delayMs, ...(error ? { error } : {}) });
        this.reconnectTimer = setTimeout(async () => {
            try {
                await this.open(true);
                this.reconnecting = false;
                this.stats.reconnects++;
                this.flushWaiting();
            }
            catch (err) {
                if (this.closedFlag)
                    return;
                const maxAttempts = (this.options.reconnect || {}).maxAttempts ?? Infinity;
                if (attempt >= maxAttempts) {
                    this.giveUp(err);
                    return;
                }
                this.scheduleReconnect(this.delay(attempt + 1), err, attempt + 1);
            }
        }, delayMs);
    }
    /** The backoff before attempt `attempt` (1-based). */
    delay(attempt) {
        const options = this.options.reconnect || {};
        const initial = options.initialDelayMs ?? 250;
        const max = options.maxDelayMs ?? 5000;
        const factor = options.factor ?? 2;
        const jitter = options.jitter ?? 0.2;
        const base = Math.min(max, initial * factor ** (attempt - 1));
        return Math.round(base * (1 - jitter + 2 * jitter * Math.random()));
    }
    giveUp(error) {
        this.closedFlag = true;
        this.reconnecting = false;
        this.failWaiting(error);
        const link = this.link;
        this.link = undefined;
        link?.connection.close();
        this.emit("closed", { error });
    }
    flushWaiting() {
        const link = this.link;
        if (link === undefined || this.state !== "connected")
            return;
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
    failWaiting(error) {
        for (const w of this.waiting) {
            clearTimeout(w.timer);
            w.reject(error);
        }
        this.waiting = [];
    }
}
