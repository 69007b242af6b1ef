/**
 * The SDK's error classes. Every error is a {@link SwitchyardError}; its `fault` says who caused it:
 * the caller (bad arguments or settings), the server (protocol breach, no answer), the network, or this
 * client (closed by the application).
 * @module
 */

/** Who caused an error. */
export type Fault = "caller" | "server" | "network" | "local";

/** Base class of every error the SDK throws or rejects with. */
export class SwitchyardError extends Error {
  /** Who caused it. */
  readonly fault: Fault;

  constructor(message: string, fault: Fault, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.fault = fault;
  }
}

/** Packet settings that due does not allow (route width 3, unknown byte order, ...). */
export class ConfigError extends SwitchyardError {
  constructor(message: string) {
    super(message, "caller");
  }
}

/** A packet that does not fit the settings (route or seq out of range, too large). Nothing was sent. */
export class EncodeError extends SwitchyardError {
  constructor(message: string) {
    super(message, "caller");
  }
}

/** The server broke the protocol: it announced a packet over the maximum size. The connection is closed. */
export class ProtocolError extends SwitchyardError {
  constructor(message: string) {
    super(message, "server");
  }
}

/** A WebSocket message that is not exactly one packet. It is dropped; the connection goes on. */
export class MalformedMessageError extends SwitchyardError {
  constructor(message: string) {
    super(message, "server");
  }
}

/** The connection could not be opened (refused, unreachable, handshake failed or took too long). */
export class ConnectError extends SwitchyardError {
  /** The address or URL dialled. */
  readonly target: string;

  constructor(target: string, message: string, options?: { cause?: unknown }) {
    super(`could not connect to ${target}: ${message}`, "network", options);
    this.target = target;
  }
}

/** The server did not answer a request in time. The connection stays open. */
export class TimeoutError extends SwitchyardError {
  /** The route of the request. */
  readonly route: number;
  /** The limit that passed, in milliseconds. */
  readonly timeoutMs: number;

  constructor(route: number, timeoutMs: number) {
    super(`request on route ${route} timed out after ${timeoutMs} ms: the server did not answer`, "server");
    this.route = route;
    this.timeoutMs = timeoutMs;
  }
}

/** The connection ended while a request was waiting for its answer (the request may or may not have run). */
export class ConnectionLostError extends SwitchyardError {
  constructor(message = "the connection was lost before the answer arrived", options?: { cause?: unknown }) {
    super(message, "network", options);
  }
}

/** The application closed the client; nothing more can be sent on it. */
export class ClientClosedError extends SwitchyardError {
  constructor() {
    super("the client was closed", "local");
  }
}

/** Every seq value of the seq width is taken by requests in flight. */
export class SeqExhaustedError extends SwitchyardError {
  constructor(inFlight: number) {
    super(`all ${inFlight} seq values are taken by requests in flight`, "local");
  }
}

/** The login hook given as `onConnect` failed after a (re)connection; the client tries again with backoff. */
export class LoginError extends SwitchyardError {
  constructor(options?: { cause?: unknown }) {
    super("the onConnect (login) hook failed", "server", options);
  }
}
