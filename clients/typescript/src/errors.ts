// What a send or request can fail with. Server errors follow
// docs/PROTOCOL.md §6: `ERROR` and `RPC_ERROR` are distinct classes.

/** The error codes of docs/PROTOCOL.md §6; an application may define others. */
export type ErrorCode =
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "INVALID_ARGUMENT"
  | "FAILED_PRECONDITION"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "UNIMPLEMENTED"
  | "CANCELLED"
  | "DEADLINE_EXCEEDED"
  | "RESOURCE_EXHAUSTED"
  | "UNAVAILABLE"
  | "ABORTED"
  | "INTERNAL"
  | (string & {});

/** The payload of `ERROR` and `RPC_ERROR` (docs/PROTOCOL.md §6). */
export interface ErrorPayload {
  /** The code. */
  code: ErrorCode;
  /** For humans. */
  message: string;
  /** Anything more the server says, e.g. `{"path": "payload.text"}`. */
  details?: unknown;
  /** Whether trying again may succeed. */
  retryable?: boolean;
  /** With `RESOURCE_EXHAUSTED` from a rate limit: when to try again. */
  retryAfterMs?: number;
}

/** Every error this client raises. */
export class SignalboxError extends Error {
  /** @param message for humans */
  constructor(message: string) {
    super(message);
  }

  override get name(): string {
    return "SignalboxError";
  }
}

/** An error the server sent: {@link MessageError} (`ERROR`) or {@link RpcError} (`RPC_ERROR`). */
export class ServerError extends SignalboxError {
  override get name(): string {
    return "ServerError";
  }

  /** The envelope type the error came in. */
  readonly kind: "ERROR" | "RPC_ERROR";
  /** The error code. */
  readonly code: ErrorCode;
  /** The server's details, if any. */
  readonly details: unknown;
  /** Whether trying again may succeed. */
  readonly retryable: boolean;
  /** When to try again (rate limits), if the server said. */
  readonly retryAfterMs: number | undefined;
  /** The correlation id of the message the error answers, if it had one. */
  readonly correlationId: string | undefined;

  /**
   * @param kind the envelope type
   * @param payload the error payload
   * @param correlationId the correlation id the error carried
   */
  constructor(kind: "ERROR" | "RPC_ERROR", payload: ErrorPayload, correlationId?: string) {
    super(`${kind} ${payload.code}: ${payload.message}`);
    this.kind = kind;
    this.code = payload.code;
    this.details = payload.details;
    this.retryable = payload.retryable ?? false;
    this.retryAfterMs = payload.retryAfterMs;
    this.correlationId = correlationId;
  }
}

/**
 * `ERROR`: a message refused before routing (undecodable, unknown or
 * reserved type, rate limit), an error answering a message of a route that
 * is not a request/response route, or an error the server sent on its own.
 */
export class MessageError extends ServerError {
  override get name(): string {
    return "MessageError";
  }

  /** @param payload the error payload @param correlationId its correlation id */
  constructor(payload: ErrorPayload, correlationId?: string) {
    super("ERROR", payload, correlationId);
  }
}

/** `RPC_ERROR`: a request/response route failed the request (docs/PROTOCOL.md §6, §7). */
export class RpcError extends ServerError {
  override get name(): string {
    return "RpcError";
  }

  /** @param payload the error payload @param correlationId its correlation id */
  constructor(payload: ErrorPayload, correlationId?: string) {
    super("RPC_ERROR", payload, correlationId);
  }
}

/**
 * No reply within the request's timeout. `sent` says whether the request
 * had been written to a connection: if not, it was withdrawn and will not
 * be sent; if so, the server may still run it (a late reply is discarded).
 */
export class TimeoutError extends SignalboxError {
  override get name(): string {
    return "TimeoutError";
  }

  /** Whether the request was written before the deadline. */
  readonly sent: boolean;
  /** @param sent whether it was written @param timeoutMs the timeout */
  constructor(sent: boolean, timeoutMs: number) {
    super(
      sent
        ? `no reply within ${timeoutMs} ms: the request was written and the server may still run it`
        : `no reply within ${timeoutMs} ms: the request was not written yet and is withdrawn`,
    );
    this.sent = sent;
  }
}

/**
 * The caller's `AbortSignal` fired. As with {@link TimeoutError}, `sent`
 * says whether the request had been written (the protocol has no way to
 * cancel a request the server has: a late reply is discarded).
 */
export class AbortedError extends SignalboxError {
  override get name(): string {
    return "AbortedError";
  }

  /** Whether the request was written before the abort. */
  readonly sent: boolean;
  /** The signal's reason. */
  readonly reason: unknown;
  /** @param sent whether it was written @param reason the signal's reason */
  constructor(sent: boolean, reason: unknown) {
    super(sent ? "request aborted after it was written" : "request aborted before it was written");
    this.sent = sent;
    this.reason = reason;
  }
}

/** The connection was lost after the request was written: the server may or may not have run it. */
export class DisconnectedError extends SignalboxError {
  override get name(): string {
    return "DisconnectedError";
  }

  constructor() {
    super("connection lost before the reply");
  }
}

/** Offline, and the offline queue refused the message (policy `"reject"`). */
export class QueueFullError extends SignalboxError {
  override get name(): string {
    return "QueueFullError";
  }

  /** @param capacity the queue's capacity */
  constructor(capacity: number) {
    super(`offline queue full (${capacity} messages)`);
  }
}

/** The client is closed. */
export class ClosedError extends SignalboxError {
  override get name(): string {
    return "ClosedError";
  }

  constructor() {
    super("client closed");
  }
}

/** A reply with the request's correlation id but not of the reply type the request expects. */
export class UnexpectedReplyError extends SignalboxError {
  override get name(): string {
    return "UnexpectedReplyError";
  }

  /** The type that came. */
  readonly type: string;
  /** @param type the type that came @param expected the type expected */
  constructor(type: string, expected: string) {
    super(`unexpected reply of type ${JSON.stringify(type)} (expected ${JSON.stringify(expected)})`);
    this.type = type;
  }
}

/** Parses an `ERROR` / `RPC_ERROR` payload; a malformed one becomes `INTERNAL`. */
export function errorPayload(value: unknown): ErrorPayload {
  if (typeof value === "object" && value !== null) {
    const v = value as Record<string, unknown>;
    if (typeof v["code"] === "string" && typeof v["message"] === "string") {
      const out: ErrorPayload = { code: v["code"], message: v["message"] };
      if ("details" in v) out.details = v["details"];
      if (typeof v["retryable"] === "boolean") out.retryable = v["retryable"];
      if (typeof v["retryAfterMs"] === "number") out.retryAfterMs = v["retryAfterMs"];
      return out;
    }
  }
  return { code: "INTERNAL", message: "malformed error payload from the server" };
}
