// WebTransport (HTTP/3) to a signalbox server (docs/PROTOCOL.md §5): the
// codec offered as WebTransport subprotocols and in the `codec` query, one
// bidirectional stream opened by the client carrying length-prefixed
// envelopes in both directions, and the session's close code. Also the rule
// that picks WebTransport or WebSocket for each connection attempt.

import type { Frame } from "./codec.js";
import { FrameReader, encodeFrame } from "./framing.js";
import type { Link, LinkEvents, TransportName } from "./link.js";

/** A certificate hash as `serverCertificateHashes` takes it (WebTransport API). */
export interface WebTransportHash {
  /** Always `"sha-256"`. */
  algorithm: string;
  /** The SHA-256 of the certificate (DER). */
  value: Uint8Array;
}

/** Options given to the WebTransport constructor. */
export interface WebTransportInit {
  /** The codec names, in order of preference (sent as `WT-Available-Protocols`). */
  protocols?: string[];
  /** Certificates trusted by hash instead of by the Web PKI (self-signed, at most 14 days). */
  serverCertificateHashes?: WebTransportHash[];
}

/** How a session ended normally: the server's application code and reason. */
export interface WebTransportCloseInfoLike {
  /** The application close code. */
  closeCode?: number;
  /** The reason. */
  reason?: string;
}

/** One bidirectional stream. */
export interface WebTransportStreamLike {
  /** What the server sends. */
  readonly readable: ReadableStream<Uint8Array>;
  /** What the client sends. */
  readonly writable: WritableStream<Uint8Array>;
}

/** The part of the browser's `WebTransport` this client uses. */
export interface WebTransportLike {
  /** Resolves once the session is established; rejects when it cannot be. */
  readonly ready: Promise<unknown>;
  /** Resolves (a close by either side) or rejects (a lost or refused session) at its end. */
  readonly closed: Promise<WebTransportCloseInfoLike>;
  /** The subprotocol the server picked, where the browser supports the `protocols` option. */
  readonly protocol?: string;
  /** Opens a bidirectional stream. */
  createBidirectionalStream(): Promise<WebTransportStreamLike>;
  /** Closes the session with an application code and reason. */
  close(info?: { closeCode?: number; reason?: string }): void;
}

/** A WebTransport class: `globalThis.WebTransport` in browsers that have it. */
export type WebTransportConstructor = new (url: string, init?: WebTransportInit) => WebTransportLike;

/**
 * Where and how a client reaches a server over WebTransport. With it, the
 * client tries WebTransport first where the platform has it, and falls
 * back to WebSocket (the client's URL) by the rule of
 * {@link TransportChoice}.
 */
export interface WebTransportOptions {
  /** The session URL, e.g. `https://example.com:4433/wt`. */
  url: string;
  /**
   * SHA-256 hashes of the server's certificate (DER), as bytes or base64:
   * for a self-signed certificate valid for at most 14 days. Omit for a
   * certificate from a certificate authority.
   */
  certificateHashes?: readonly (Uint8Array | ArrayBuffer | string)[];
  /** A WebTransport session not ready within this many ms is given up for WebSocket. Default 5,000. */
  connectTimeoutMs?: number;
  /**
   * After a WebTransport attempt failed, attempts use WebSocket for this
   * many ms before WebTransport is tried again. Default 300,000 (5 min).
   */
  retryAfterMs?: number;
  /** The WebTransport class. Default `globalThis.WebTransport`; without one, WebSocket is used. */
  WebTransport?: WebTransportConstructor;
}

/** The WebTransport class the client would use: the option's, else the platform's. */
export function webTransportClass(options: WebTransportOptions | undefined): WebTransportConstructor | undefined {
  if (options === undefined) return undefined;
  return (
    options.WebTransport ?? (globalThis as { WebTransport?: WebTransportConstructor }).WebTransport
  );
}

/**
 * Which transport each connection attempt uses:
 *
 * - WebSocket when WebTransport is not available (no endpoint, or no
 *   WebTransport class);
 * - otherwise WebTransport, unless a WebTransport attempt failed (refused,
 *   not ready in time, the constructor threw) less than `retryAfterMs` ago:
 *   then WebSocket. A failed WebTransport attempt is followed at once, in
 *   the same attempt, by a WebSocket one.
 * - A WebTransport session that was established and then lost is not a
 *   failure: the next attempt tries WebTransport again.
 */
export class TransportChoice {
  private failedAt: number | undefined;

  /**
   * @param available whether WebTransport can be used at all
   * @param retryAfterMs how long after a failure WebTransport is skipped
   */
  constructor(
    readonly available: boolean,
    readonly retryAfterMs: number,
  ) {}

  /** The transport of an attempt made at `now` (ms). */
  next(now: number): TransportName {
    if (!this.available) return "websocket";
    if (this.failedAt !== undefined && now - this.failedAt < this.retryAfterMs) return "websocket";
    return "webtransport";
  }

  /** A WebTransport attempt failed at `now`. */
  failed(now: number): void {
    this.failedAt = now;
  }

  /** A connection over `transport` opened. */
  opened(transport: TransportName): void {
    if (transport === "webtransport") this.failedAt = undefined;
  }
}

/**
 * The WebSocket close code (docs/PROTOCOL.md §4) of a WebTransport session
 * close code (§5): 0 normal → 1000, 1 going away → 1001, 2 protocol
 * violation → 1002, 3 policy → 1008, 4 internal → 1011; any other `c` →
 * 4000 + `c` when below 1000 (the private range), else undefined.
 */
export function closeCodeOf(code: number): number | undefined {
  switch (code) {
    case 0:
      return 1000;
    case 1:
      return 1001;
    case 2:
      return 1002;
    case 3:
      return 1008;
    case 4:
      return 1011;
    default:
      return Number.isInteger(code) && code >= 0 && code < 1000 ? 4000 + code : undefined;
  }
}

/** The WebTransport close code (§5) of a WebSocket close code the client closes with. */
export function sessionCodeOf(code: number): number {
  switch (code) {
    case 1001:
      return 1;
    case 1002:
      return 2;
    case 1008:
      return 3;
    case 1011:
      return 4;
    default:
      return 0;
  }
}

/** WebSocket's code for a connection lost without a close (no close frame, no session close). */
const LOST = 1006;
/** Reasons travel in a capsule; WebTransport limits them to 1024 bytes. */
const MAX_REASON = 1024;

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** `certificateHashes` as the constructor takes them; throws on bad base64. */
export function certificateHashes(hashes: WebTransportOptions["certificateHashes"]): WebTransportHash[] {
  return (hashes ?? []).map((h) => ({
    algorithm: "sha-256",
    value: typeof h === "string" ? fromBase64(h) : h instanceof Uint8Array ? h : new Uint8Array(h),
  }));
}

/** `url` with `?codec=` naming `codec`, unless it names one already. */
export function sessionUrl(url: string, codec: string): string {
  const u = new URL(url);
  if (!u.searchParams.has("codec")) u.searchParams.set("codec", codec);
  return u.toString();
}

const textEncoder = new TextEncoder();

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A link over one WebTransport session and its one bidirectional stream. */
export class WebTransportLink implements Link {
  readonly transport = "webtransport";
  private readonly session: WebTransportLike;
  private readonly reader: FrameReader;
  private writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  private open = false;
  private ended = false;

  /**
   * Starts the session. Throws what the WebTransport constructor throws (a
   * malformed URL, a hash it refuses).
   * @param codecs offered in order; the first also goes in the `codec` query
   * @param maxFrame the largest frame accepted from the server, in bytes
   */
  constructor(
    WT: WebTransportConstructor,
    options: WebTransportOptions,
    codecs: readonly string[],
    maxFrame: number,
    private readonly events: LinkEvents,
  ) {
    this.reader = new FrameReader(maxFrame);
    const init: WebTransportInit = { protocols: [...codecs] };
    const hashes = certificateHashes(options.certificateHashes);
    if (hashes.length > 0) init.serverCertificateHashes = hashes;
    this.session = new WT(sessionUrl(options.url, codecs[0] ?? "json"), init);
    this.session.closed.then(
      (info) =>
        this.end(
          info.closeCode === undefined ? LOST : closeCodeOf(info.closeCode),
          info.reason !== undefined && info.reason !== "" ? info.reason : this.lostReason(),
        ),
      (error: unknown) => this.end(LOST, `${this.lostReason()}: ${message(error)}`),
    );
    void this.run(codecs[0] ?? "json");
  }

  private lostReason(): string {
    return this.open ? "the connection was lost" : "the connection could not be made";
  }

  private async run(queried: string): Promise<void> {
    let stream: WebTransportStreamLike;
    try {
      await this.session.ready;
      if (this.ended) return;
      stream = await this.session.createBidirectionalStream();
    } catch (e) {
      this.fail(`${this.lostReason()}: ${message(e)}`);
      return;
    }
    if (this.ended) return;
    this.writer = stream.writable.getWriter();
    this.writer.closed.catch(() => undefined);
    this.open = true;
    // Without the `protocols` option the server went by the query.
    const picked = this.session.protocol;
    this.events.open(typeof picked === "string" && picked !== "" ? picked : queried);
    const reader = stream.readable.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.ended) break;
        for (const frame of this.reader.push(value)) {
          if (this.ended) return;
          this.events.frame(frame);
        }
        const error = this.reader.error;
        if (error !== undefined) {
          this.fail(error.message, 2);
          return;
        }
      }
    } catch {
      // The session's end follows (closed).
      return;
    }
    // The server finished the stream: its session close follows; a server
    // that does not close is closed by the client after a second.
    if (this.ended) return;
    if (this.reader.buffered > 0) {
      this.fail("the stream ended inside a frame", 2);
      return;
    }
    setTimeout(() => this.fail("the server ended the stream"), 1000);
  }

  /** Closes the session with `sessionCode` and ends the link. */
  private fail(reason: string, sessionCode = 0): void {
    if (this.ended) return;
    this.closeSession(sessionCode, reason);
    this.end(closeCodeOf(sessionCode), reason);
  }

  private closeSession(code: number, reason: string): void {
    try {
      this.session.close({ closeCode: code, reason: reason.slice(0, MAX_REASON / 4) });
    } catch {
      // Closed already.
    }
  }

  private end(code: number | undefined, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.events.closed(code, reason);
  }

  send(frame: Frame): void {
    const writer = this.writer;
    if (writer === undefined || this.ended) return;
    const bytes = typeof frame === "string" ? textEncoder.encode(frame) : frame;
    // Writes queue in order; a failed one means the session is ending.
    writer.write(encodeFrame(bytes)).catch(() => undefined);
  }

  close(code: number, reason: string): void {
    if (this.ended) return;
    const writer = this.writer;
    const sessionCode = sessionCodeOf(code);
    if (writer === undefined) {
      this.closeSession(sessionCode, reason);
      return;
    }
    // What was written goes out first (a finished stream), then the session closes.
    const done = (): void => this.closeSession(sessionCode, reason);
    const timer = setTimeout(done, 500);
    writer.close().then(
      () => {
        clearTimeout(timer);
        done();
      },
      () => {
        clearTimeout(timer);
        done();
      },
    );
  }

  terminate(reason: string): void {
    this.closeSession(0, reason);
    this.end(undefined, reason);
  }
}
