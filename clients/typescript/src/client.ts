// The client: one connection to a signalbox server over WebSocket
// (docs/PROTOCOL.md §4) or WebTransport (§5, through the link seam of
// link.ts) that survives disconnects, with the behaviour of the
// Rust client (core/src/client/mod.rs): typed sends and handlers, requests
// with correlation ids, deadlines and progress, reconnects with backoff and
// jitter, a bounded offline queue, resume of topics with history (§8.1) and
// presence (§8.2).

import { Backoff } from "./backoff.js";
import {
  COMPRESSED,
  type CodecName,
  type Envelope,
  type Frame,
  type Meta,
  type WireCodec,
  codecByName,
  compress,
  decompress,
  frameBytes,
  isCodecName,
} from "./codec.js";
import { type Link, type LinkEvents, type TransportName, type WebSocketConstructor, WebSocketLink } from "./link.js";
import {
  AbortedError,
  ClosedError,
  DisconnectedError,
  MessageError,
  QueueFullError,
  RpcError,
  type ServerError,
  SignalboxError,
  TimeoutError,
  UnexpectedReplyError,
  errorPayload,
} from "./errors.js";
import { OfflineQueue, type OfflinePolicy } from "./offline.js";
import { type Position, Positions, type Recovery, UNSUBSCRIBED } from "./positions.js";
import { Presence, type PresenceEvent, type PresenceMember } from "./presence.js";
import { TransportChoice, type WebTransportOptions, WebTransportLink, webTransportClass } from "./webtransport.js";

/**
 * The messages of one application, by direction, for the types of `send`,
 * `on` and `request`: `send` maps each type a client sends to its payload,
 * `receive` each type the server sends, and `requests` each request type to
 * the type of its reply. The chat's map is generated from its Rust messages
 * (`@signalbox/client/chat`).
 */
export interface MessageMap {
  /** What a client sends: type → payload. */
  send: object;
  /** What the server sends: type → payload. */
  receive: object;
  /** Requests: type → the type of its reply (a key of `receive`). */
  requests: object;
}

/** A map that allows any type with any payload (an untyped client). */
export interface AnyMessages extends MessageMap {
  send: Record<string, unknown>;
  receive: Record<string, unknown>;
  requests: Record<string, string>;
}

/** The types a client sends. */
export type SendType<M extends MessageMap> = keyof M["send"] & string;
/** The types the server sends. */
export type ReceiveType<M extends MessageMap> = keyof M["receive"] & string;
/** The types that are requests (sent, with a reply type). */
export type RequestType<M extends MessageMap> = keyof M["requests"] & keyof M["send"] & string;
/** The payload of the reply to request `K`. */
export type ReplyOf<M extends MessageMap, K extends RequestType<M>> =
  M["requests"][K] extends keyof M["receive"] ? M["receive"][M["requests"][K]] : unknown;
/** The payload argument: optional when the payload may be absent. */
export type PayloadArg<P> = undefined extends P ? [payload?: P] : [payload: P];

/** Where the client stands. */
export type ConnectionState =
  | {
      /** The first connection attempt is under way. */
      state: "connecting";
    }
  | {
      /** Connected: sends go out now. */
      state: "connected";
      /** The codec the server picked. */
      codec: CodecName;
      /** The transport of the connection. */
      transport: TransportName;
      /** Whether this is a reconnect. */
      reconnect: boolean;
    }
  | {
      /** The connection was lost or could not be made: waiting `delayMs`, then attempt `attempt`. */
      state: "reconnecting";
      /** The attempt about to be made (1 for the first after a loss). */
      attempt: number;
      /** How long until it is made. */
      delayMs: number;
      /**
       * The close code of the lost connection, if it had one (1006: no close
       * frame); a WebTransport session's code as its WebSocket twin (0 → 1000,
       * 1 → 1001, 2 → 1002, 3 → 1008, 4 → 1011; docs/PROTOCOL.md §5).
       */
      code?: number;
      /** Why the last connection or attempt ended. */
      reason: string;
    }
  | {
      /** Closed for good: by `close()`, or lost with `reconnect: false`. */
      state: "closed";
      /** The close code, if the connection had one (WebTransport's mapped as for `reconnecting`). */
      code?: number;
      /** Why. */
      reason: string;
    };

/** What an `onConnected` hook is given at every (re)connect. */
export interface ConnectedContext<M extends MessageMap> {
  /** Whether this is a reconnect (false for the first connection). */
  readonly reconnect: boolean;
  /** Sends first on this connection, after the resume and before the offline queue. */
  send<K extends SendType<M>>(type: K, ...payload: PayloadArg<M["send"][K]>): void;
}

/** Options of a {@link Client}; every one has a default. */
export interface ClientOptions<M extends MessageMap = AnyMessages> {
  /** Codecs to offer, in order of preference (docs/PROTOCOL.md §2). Default `["json"]`. */
  codecs?: readonly CodecName[];
  /** The WebSocket class. Default `globalThis.WebSocket` (Node 20 has none: pass `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /**
   * A WebTransport endpoint of the same server (docs/PROTOCOL.md §5). Where
   * the platform has WebTransport, connections use it first and fall back
   * to WebSocket (`url`) when it fails (see {@link WebTransportOptions}).
   * Default none: WebSocket only.
   */
  webTransport?: WebTransportOptions;
  /** Reconnect after a lost connection or a failed attempt. Default true. */
  reconnect?: boolean;
  /** First reconnect delay's ceiling, ms. Default 300. */
  initialBackoffMs?: number;
  /** Longest reconnect delay, ms. Default 10,000. */
  maxBackoffMs?: number;
  /** A connection attempt not open within this many ms is abandoned. Default 10,000. */
  connectTimeoutMs?: number;
  /** Messages kept while disconnected. Default 256. */
  offlineQueue?: number;
  /** What a full offline queue does (see {@link OfflinePolicy}). Default `"drop-oldest"`. */
  offlinePolicy?: OfflinePolicy;
  /**
   * Send `__heartbeat` this often (docs/PROTOCOL.md §4), ms; 0 turns
   * heartbeats off. Default 20,000 (the server closes connections silent
   * for its interval plus timeout, 40 s by default). WebSocket only:
   * WebTransport has QUIC's keep-alives and idle timeout (§5).
   */
  heartbeatIntervalMs?: number;
  /**
   * A connection from which nothing (no message, no `__heartbeat_ack`)
   * arrives within this many ms of a heartbeat is taken as dead, dropped
   * and reconnected. Default 10,000.
   */
  heartbeatTimeoutMs?: number;
  /** Default request timeout, ms. Default 30,000 (the server's default RPC deadline). */
  requestTimeoutMs?: number;
  /** After a reconnect, resume the topics with history held (docs/PROTOCOL.md §8.1). Default true. */
  resume?: boolean;
  /** With a `+gzip` codec, compress envelopes of at least this many bytes (§3). Default 1024. */
  compressThreshold?: number;
  /**
   * A compressed envelope from the server may inflate to at most this many
   * bytes, and over WebTransport a frame's length prefix may announce at most
   * this many (more closes the session as a protocol violation, §5). Default 1 MiB.
   */
  maxMessageSize?: number;
  /**
   * The reply type of each request (the runtime twin of `M["requests"]`,
   * e.g. `chatReplyTypes`): a reply of another type fails the request with
   * `UnexpectedReplyError`. Without it any reply that is not an error is taken.
   */
  replyTypes?: { readonly [K in RequestType<M>]?: string };
  /** Sends first at every (re)connect (re-join rooms), after the resume. */
  onConnected?: (ctx: ConnectedContext<M>) => void;
}

/** Options of one request. */
export interface RequestOptions {
  /** ms to wait for the reply. Default the client's `requestTimeoutMs`. */
  timeout?: number;
  /** Stops waiting when aborted ({@link AbortedError}); an unwritten request is withdrawn. */
  signal?: AbortSignal;
  /** Receives each progress message (`$ws:rpc-progress`, docs/PROTOCOL.md §7). */
  onProgress?: (payload: unknown, meta: Meta) => void;
  /** Extended meta to send along (the correlation id is the client's). */
  meta?: Meta;
}

/** Counters of what the client dropped or saw. */
export interface ClientStats {
  /** Messages waiting in the offline queue. */
  queuedOffline: number;
  /** Messages the offline queue dropped or refused (policy), or that waited when the client closed. */
  droppedOffline: number;
  /** Frames from the server that did not decode. */
  undecodable: number;
  /** `__heartbeat` messages sent. */
  heartbeatsSent: number;
  /** `__heartbeat_ack` messages received. */
  heartbeatAcks: number;
  /** Connections opened (1 after the first connect; failed attempts not counted). */
  connections: number;
  /** WebTransport attempts that failed and were followed by WebSocket ones. */
  webTransportFallbacks: number;
  /** Envelopes sent compressed (docs/PROTOCOL.md §3). */
  compressedSent: number;
  /** Compressed envelopes received. */
  compressedReceived: number;
}

const PROGRESS = "$ws:rpc-progress";
const HEARTBEAT = "__heartbeat";
const HEARTBEAT_ACK = "__heartbeat_ack";

interface Outgoing {
  envelope: Envelope;
  /** The correlation id of a request. */
  id?: string;
}

interface Pending {
  expect: string | undefined;
  resolve: (payload: unknown) => void;
  reject: (error: Error) => void;
  onProgress: ((payload: unknown, meta: Meta) => void) | undefined;
  /** The connection the request was written on, once it was. */
  sentOn: number | undefined;
}

type Handler = (payload: unknown, meta: Meta, envelope: Envelope) => void;

/** One connection attempt, from its creation to its end, and what the client keeps of it. */
class Connection {
  /** Set right after creation (the link's events never come synchronously). */
  link: Link | undefined;
  open = false;
  ended = false;
  codec: WireCodec | undefined;
  /** Outgoing that wait behind an envelope being compressed. */
  writeQueue: Outgoing[] = [];
  pumping = false;
  inbound: Promise<void> = Promise.resolve();
  inboundPending = 0;
  lastHeard = Date.now();
  timers: ReturnType<typeof setTimeout>[] = [];
  heartbeat: ReturnType<typeof setInterval> | undefined;
  /** Called once the link has closed. */
  closeWaiters: (() => void)[] = [];
  linkClosed = false;

  constructor(
    readonly id: number,
    readonly transport: TransportName,
  ) {}

  stopTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers = [];
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }
}

function report(error: unknown): void {
  console.error("signalbox client: a handler threw", error);
}

function emit<T>(listeners: Set<(value: T) => void>, value: T): void {
  for (const listener of [...listeners]) {
    try {
      listener(value);
    } catch (e) {
      report(e);
    }
  }
}

/**
 * A connection to a signalbox server that survives disconnects, typed by a
 * {@link MessageMap}.
 *
 * ```ts
 * const client = new Client<ChatMessages>("ws://127.0.0.1:8080/ws", { codecs: ["msgpack", "json"] });
 * client.on("NEW_MESSAGE", (m) => console.log(m.userId, m.text));
 * await client.send("JOIN_ROOM", { roomId: "lobby" });
 * ```
 */
export class Client<M extends MessageMap = AnyMessages> {
  private readonly url: string;
  private readonly codecs: readonly CodecName[];
  private readonly WS: WebSocketConstructor;
  private readonly webTransport: WebTransportOptions | undefined;
  private readonly choice: TransportChoice;
  private readonly opts: Required<Omit<ClientOptions<M>, "onConnected" | "WebSocket" | "webTransport" | "codecs" | "replyTypes">>;
  private readonly replyTypes: { readonly [key: string]: string | undefined } | undefined;
  private readonly onConnectedHook: ((ctx: ConnectedContext<M>) => void) | undefined;
  private readonly backoff: Backoff;
  private readonly offline: OfflineQueue<Outgoing>;
  private readonly pending = new Map<string, Pending>();
  private readonly handlers = new Map<string, Set<Handler>>();
  private readonly anyHandlers = new Set<(envelope: Envelope) => void>();
  private readonly stateListeners = new Set<(s: ConnectionState) => void>();
  private readonly recoveryListeners = new Set<(r: Recovery) => void>();
  private readonly presenceListeners = new Set<(e: PresenceEvent) => void>();
  private readonly errorListeners = new Set<(e: ServerError) => void>();
  private readonly tracker: Positions;
  private readonly presence: Presence;
  private conn: Connection | undefined;
  /** Connection attempts made. */
  private links = 0;
  /** Connections opened. */
  private opens = 0;
  private nextId = 1;
  private closed = false;
  private fallbackReason: string | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private current: ConnectionState = { state: "connecting" };
  private counters = {
    droppedOffline: 0,
    undecodable: 0,
    heartbeatsSent: 0,
    heartbeatAcks: 0,
    compressedSent: 0,
    compressedReceived: 0,
    webTransportFallbacks: 0,
  };

  /**
   * Starts connecting to `url` (e.g. `ws://127.0.0.1:8080/ws`) at once.
   * @param url the server's WebSocket URL
   * @param options see {@link ClientOptions}
   */
  constructor(url: string, options: ClientOptions<M> = {}) {
    this.url = url;
    this.codecs = [...new Set<CodecName>(options.codecs ?? ["json"])];
    if (this.codecs.length === 0 || !this.codecs.every(isCodecName)) {
      throw new SignalboxError(`codecs: one or more of json, msgpack, json+gzip, msgpack+gzip`);
    }
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (WS === undefined) {
      throw new SignalboxError("no WebSocket here: pass one (in Node: `WebSocket` from the ws package)");
    }
    this.WS = WS;
    this.webTransport = options.webTransport;
    this.choice = new TransportChoice(
      webTransportClass(options.webTransport) !== undefined,
      options.webTransport?.retryAfterMs ?? 300_000,
    );
    this.opts = {
      reconnect: options.reconnect ?? true,
      initialBackoffMs: options.initialBackoffMs ?? 300,
      maxBackoffMs: options.maxBackoffMs ?? 10_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      offlineQueue: options.offlineQueue ?? 256,
      offlinePolicy: options.offlinePolicy ?? "drop-oldest",
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 20_000,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 10_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      resume: options.resume ?? true,
      compressThreshold: options.compressThreshold ?? 1024,
      maxMessageSize: options.maxMessageSize ?? 1024 * 1024,
    };
    this.onConnectedHook = options.onConnected;
    this.replyTypes = options.replyTypes;
    this.backoff = new Backoff(this.opts.initialBackoffMs, this.opts.maxBackoffMs);
    this.offline = new OfflineQueue(this.opts.offlineQueue, this.opts.offlinePolicy);
    this.tracker = new Positions((r) => emit(this.recoveryListeners, r));
    this.presence = new Presence((e) => emit(this.presenceListeners, e));
    // After the caller's synchronous set-up, so that its listeners see every state.
    queueMicrotask(() => this.attempt());
  }

  /** Where the client stands. */
  get state(): ConnectionState {
    return this.current;
  }

  /** The codec of the current connection, if connected. */
  get codec(): CodecName | undefined {
    return this.conn?.open ? this.conn.codec?.name : undefined;
  }

  /** The transport of the current connection, if connected. */
  get transport(): TransportName | undefined {
    return this.conn?.open ? this.conn.transport : undefined;
  }

  /** Why the last WebTransport attempt that fell back to WebSocket failed, if one did. */
  get webTransportError(): string | undefined {
    return this.fallbackReason;
  }

  /** Counters of what was dropped or seen. */
  stats(): ClientStats {
    return { ...this.counters, queuedOffline: this.offline.length, connections: this.opens };
  }

  /** The last position seen per topic with history (docs/PROTOCOL.md §8.1). */
  positions(): Map<string, Position> {
    return this.tracker.snapshot();
  }

  /** The members of `topic` this client knows of (docs/PROTOCOL.md §8.2). */
  members(topic: string): PresenceMember[] {
    return this.presence.members(topic);
  }

  /**
   * Replaces the member list of `topic` with one the application received
   * in its own message (the chat's `ROOM_MEMBERS`); `$sb:join` and
   * `$sb:leave` then keep it current.
   */
  setMembers(topic: string, members: readonly PresenceMember[]): void {
    this.presence.set(topic, members);
  }

  /** Calls `handler` with every message of type `type`; returns a function that stops it. */
  on<K extends ReceiveType<M>>(
    type: K,
    handler: (payload: M["receive"][K], meta: Meta, envelope: Envelope) => void,
  ): () => void {
    let set = this.handlers.get(type);
    if (set === undefined) {
      set = new Set();
      this.handlers.set(type, set);
    }
    const h = handler as Handler;
    set.add(h);
    return () => set.delete(h);
  }

  /** Calls `handler` with every application message (protocol messages excluded). */
  onMessage(handler: (envelope: Envelope) => void): () => void {
    this.anyHandlers.add(handler);
    return () => this.anyHandlers.delete(handler);
  }

  /** Calls `handler` at every change of state (see {@link ConnectionState}). */
  onState(handler: (state: ConnectionState) => void): () => void {
    this.stateListeners.add(handler);
    return () => this.stateListeners.delete(handler);
  }

  /** Calls `handler` with what became of each topic the client resumed. */
  onRecovery(handler: (recovery: Recovery) => void): () => void {
    this.recoveryListeners.add(handler);
    return () => this.recoveryListeners.delete(handler);
  }

  /** Calls `handler` at every `$sb:join` and `$sb:leave`. */
  onPresence(handler: (event: PresenceEvent) => void): () => void {
    this.presenceListeners.add(handler);
    return () => this.presenceListeners.delete(handler);
  }

  /**
   * Calls `handler` with every `ERROR` / `RPC_ERROR` that answers no pending
   * request (errors answering a `send`, errors the server sends on its own).
   */
  onError(handler: (error: ServerError) => void): () => void {
    this.errorListeners.add(handler);
    return () => this.errorListeners.delete(handler);
  }

  /** Resolves true once connected, false after `timeoutMs` or when closed. */
  waitConnected(timeoutMs = 10_000): Promise<boolean> {
    if (this.current.state === "connected") return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        off();
        resolve(false);
      }, timeoutMs);
      const off = this.onState((s) => {
        if (s.state === "connected" || s.state === "closed") {
          clearTimeout(timer);
          off();
          resolve(s.state === "connected");
        }
      });
    });
  }

  /**
   * Sends a message. Connected, it goes out now; otherwise it waits in the
   * offline queue (see {@link OfflinePolicy} for a full queue). Rejects with
   * {@link ClosedError} once closed, {@link QueueFullError} when refused.
   */
  send<K extends SendType<M>>(type: K, ...payload: PayloadArg<M["send"][K]>): Promise<void> {
    return this.sendMeta(type, undefined, ...payload);
  }

  /** Like {@link Client.send}, with extended meta. */
  sendMeta<K extends SendType<M>>(
    type: K,
    meta: Meta | undefined,
    ...payload: PayloadArg<M["send"][K]>
  ): Promise<void> {
    try {
      this.enqueue({ envelope: envelope(type, meta, payload[0]) });
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e instanceof Error ? e : new SignalboxError(String(e)));
    }
  }

  /**
   * Sends request `type` and resolves with its reply's payload. Rejects
   * with {@link RpcError} or {@link MessageError} when the server answers
   * with one, {@link TimeoutError} past the timeout, {@link AbortedError}
   * when `signal` aborts, {@link DisconnectedError} when the connection is
   * lost after the request was written. A request not written by then is
   * withdrawn and never sent.
   */
  request<K extends RequestType<M>>(
    type: K,
    payload: M["send"][K],
    options: RequestOptions = {},
  ): Promise<ReplyOf<M, K>> {
    const expect = this.replyTypes?.[type];
    return this.requestRaw(type, payload, expect, options) as Promise<ReplyOf<M, K>>;
  }

  private requestRaw(
    type: string,
    payload: unknown,
    expect: string | undefined,
    options: RequestOptions,
  ): Promise<unknown> {
    const timeoutMs = options.timeout ?? this.opts.requestTimeoutMs;
    const signal = options.signal;
    if (this.closed) return Promise.reject(new ClosedError());
    if (signal?.aborted) return Promise.reject(new AbortedError(false, signal.reason));
    const id = `c${this.nextId++}`;
    return new Promise<unknown>((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = (): void => {
        cleanup();
        reject(new AbortedError(this.giveUp(id), signal?.reason));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new TimeoutError(this.giveUp(id), timeoutMs));
      }, timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(id, {
        expect,
        resolve: (value) => {
          cleanup();
          resolve(value);
        },
        reject: (error) => {
          cleanup();
          reject(error);
        },
        onProgress: options.onProgress,
        sentOn: undefined,
      });
      try {
        this.enqueue({ envelope: envelope(type, { ...options.meta, correlationId: id }, payload), id });
      } catch (e) {
        this.pending.delete(id);
        cleanup();
        reject(e instanceof Error ? e : new SignalboxError(String(e)));
      }
    });
  }

  /**
   * Closes the connection normally (1000) and stops reconnecting. Pending
   * requests fail with {@link ClosedError}; what waited offline is dropped.
   * Resolves when the socket has closed (at most 1 s).
   */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    const conn = this.conn;
    if (conn !== undefined) this.end(conn, 1000, "closed by the client");
    else this.stop(undefined, "closed by the client");
    return new Promise<void>((resolve) => {
      const link = conn?.link;
      if (conn === undefined || link === undefined || conn.linkClosed) {
        resolve();
        return;
      }
      const timer = setTimeout(resolve, 1000);
      conn.closeWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
      link.close(1000, "client closing");
    });
  }

  // --- connecting ---------------------------------------------------------

  private setState(state: ConnectionState): void {
    this.current = state;
    emit(this.stateListeners, state);
  }

  private attempt(): void {
    this.retryTimer = undefined;
    if (this.closed) return;
    if (this.links === 0) this.setState({ state: "connecting" });
    this.connect(this.choice.next(Date.now()));
  }

  /** Starts a connection attempt over `transport`. */
  private connect(transport: TransportName): void {
    const conn = new Connection(++this.links, transport);
    const events: LinkEvents = {
      open: (protocol) => this.opened(conn, protocol),
      frame: (frame) => this.received(conn, frame),
      closed: (code, reason) => {
        conn.linkClosed = true;
        for (const waiter of conn.closeWaiters.splice(0)) waiter();
        this.end(conn, code, reason);
      },
    };
    const wt = this.webTransport;
    const WT = webTransportClass(wt);
    try {
      conn.link =
        transport === "webtransport" && wt !== undefined && WT !== undefined
          ? new WebTransportLink(WT, wt, this.codecs, this.opts.maxMessageSize, events)
          : new WebSocketLink(this.WS, this.url, this.codecs, events);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      if (transport === "webtransport") {
        // A URL or certificate hash the platform refuses: WebSocket may still work.
        this.fellBack(conn, `WebTransport refused: ${why}`);
        return;
      }
      // A malformed URL: retrying cannot help.
      this.stop(undefined, `cannot connect: ${why}`);
      return;
    }
    this.conn = conn;
    const timeoutMs =
      transport === "webtransport" ? (wt?.connectTimeoutMs ?? 5_000) : this.opts.connectTimeoutMs;
    conn.timers.push(setTimeout(() => this.abandon(conn, "connection attempt timed out"), timeoutMs));
  }

  /**
   * A WebTransport attempt failed before it opened: the same attempt goes on
   * over WebSocket at once, and later ones by the rule of {@link TransportChoice}.
   */
  private fellBack(conn: Connection, reason: string): void {
    this.choice.failed(Date.now());
    this.counters.webTransportFallbacks += 1;
    this.fallbackReason = reason;
    if (this.conn === conn) this.conn = undefined;
    this.connect("websocket");
  }

  private opened(conn: Connection, protocol: string): void {
    if (conn.ended || this.closed) return;
    const name = protocol === "" ? "json" : protocol;
    if (!isCodecName(name) || !this.codecs.includes(name)) {
      this.abandon(conn, `the server picked codec ${JSON.stringify(name)}, which was not offered`);
      return;
    }
    conn.stopTimers();
    conn.codec = codecByName(name);
    conn.open = true;
    conn.lastHeard = Date.now();
    this.backoff.reset();
    this.choice.opened(conn.transport);
    this.opens += 1;
    const reconnect = this.opens > 1;
    this.setState({ state: "connected", codec: name, transport: conn.transport, reconnect });
    // A reconnect asks for the topics it held first, so that what waited
    // offline is handled by a server that knows them again.
    const batch: Outgoing[] = [];
    if (reconnect && this.opts.resume) {
      const resume = this.tracker.resumeEnvelope();
      if (resume !== undefined) batch.push({ envelope: resume });
    }
    if (this.onConnectedHook !== undefined) {
      try {
        this.onConnectedHook({
          reconnect,
          send: (type, ...payload) => batch.push({ envelope: envelope(type, undefined, payload[0]) }),
        });
      } catch (e) {
        report(e);
      }
    }
    batch.push(...this.offline.take());
    for (const out of batch) {
      if (conn.ended) {
        this.requeue([out]);
        continue;
      }
      this.write(conn, out);
    }
    // WebTransport has QUIC's keep-alives (docs/PROTOCOL.md §5).
    if (conn.transport === "websocket") this.startHeartbeat(conn);
  }

  private startHeartbeat(conn: Connection): void {
    const interval = this.opts.heartbeatIntervalMs;
    if (interval <= 0 || conn.ended) return;
    conn.heartbeat = setInterval(() => {
      if (conn.ended) return;
      const sentAt = Date.now();
      this.counters.heartbeatsSent += 1;
      this.write(conn, { envelope: { type: HEARTBEAT } });
      const check = setTimeout(() => {
        conn.timers = conn.timers.filter((t) => t !== check);
        if (!conn.ended && conn.lastHeard < sentAt) {
          this.abandon(conn, `nothing heard within ${this.opts.heartbeatTimeoutMs} ms of a heartbeat`);
        }
      }, this.opts.heartbeatTimeoutMs);
      conn.timers.push(check);
    }, interval);
  }

  /** Drops `conn` at once, without waiting for a closing handshake. */
  private abandon(conn: Connection, reason: string): void {
    if (conn.ended) return;
    this.end(conn, undefined, reason);
    conn.link?.terminate(reason);
  }

  /** `conn` ended: requeue what it did not write, fail what it did, reconnect. */
  private end(conn: Connection, code: number | undefined, reason: string): void {
    if (conn.ended) return;
    conn.ended = true;
    conn.stopTimers();
    if (this.conn === conn) this.conn = undefined;
    if (conn.transport === "webtransport" && !conn.open && !this.closed) {
      // Nothing was written on it: nothing to requeue or fail.
      this.fellBack(conn, reason);
      return;
    }
    // Messages handed over but never written go first in the offline queue.
    const unwritten = conn.writeQueue.filter((o) => o.id === undefined || this.pending.has(o.id));
    conn.writeQueue = [];
    this.requeue(unwritten);
    // Requests written on it will get no reply.
    for (const [id, p] of this.pending) {
      if (p.sentOn === conn.id) {
        this.pending.delete(id);
        p.reject(new DisconnectedError());
      }
    }
    if (this.closed || !this.opts.reconnect) {
      this.stop(code, reason);
      return;
    }
    const delayMs = this.backoff.next();
    this.setState({
      state: "reconnecting",
      attempt: this.backoff.attempt,
      delayMs,
      ...(code !== undefined ? { code } : {}),
      reason,
    });
    this.retryTimer = setTimeout(() => this.attempt(), delayMs);
  }

  /** Stops for good. */
  private stop(code: number | undefined, reason: string): void {
    this.closed = true;
    this.counters.droppedOffline += this.offline.take().length;
    for (const p of this.pending.values()) p.reject(new ClosedError());
    this.pending.clear();
    this.setState({ state: "closed", ...(code !== undefined ? { code } : {}), reason });
  }

  // --- writing ------------------------------------------------------------

  private requeue(outs: Outgoing[]): void {
    if (outs.length > 0) this.offline.requeueFront(outs, (o) => this.dropped(o));
  }

  private dropped(out: Outgoing): void {
    this.counters.droppedOffline += 1;
    if (out.id !== undefined) {
      const p = this.pending.get(out.id);
      this.pending.delete(out.id);
      p?.reject(new QueueFullError(this.offline.capacity));
    }
  }

  private enqueue(out: Outgoing): void {
    if (this.closed) throw new ClosedError();
    const conn = this.conn;
    if (conn !== undefined && conn.open && !conn.ended) {
      this.write(conn, out);
      return;
    }
    if (this.offline.push(out, (o) => this.dropped(o)) === "rejected") {
      this.counters.droppedOffline += 1;
      throw new QueueFullError(this.offline.capacity);
    }
  }

  /** Writes `out` on `conn` in order: behind anything still being compressed. */
  private write(conn: Connection, out: Outgoing): void {
    const codec = conn.codec;
    if (codec === undefined) return;
    if (conn.writeQueue.length === 0 && !conn.pumping) {
      const frame = codec.encode(out.envelope);
      if (!codec.gzip || frameBytes(frame) < this.opts.compressThreshold) {
        this.writeFrame(conn, out, frame);
        return;
      }
    }
    conn.writeQueue.push(out);
    if (!conn.pumping) void this.pump(conn);
  }

  private async pump(conn: Connection): Promise<void> {
    const codec = conn.codec;
    if (codec === undefined) return;
    conn.pumping = true;
    try {
      while (!conn.ended && conn.writeQueue.length > 0) {
        const out = conn.writeQueue[0];
        if (out === undefined) break;
        let frame = codec.encode(out.envelope);
        if (codec.gzip && frameBytes(frame) >= this.opts.compressThreshold) {
          frame = await compress(codec, frame);
          this.counters.compressedSent += 1;
        }
        if (conn.ended) break;
        conn.writeQueue.shift();
        this.writeFrame(conn, out, frame);
      }
    } finally {
      conn.pumping = false;
    }
  }

  private writeFrame(conn: Connection, out: Outgoing, frame: Frame): void {
    if (out.id !== undefined) {
      const p = this.pending.get(out.id);
      // A request whose caller gave up is not written.
      if (p === undefined) return;
      p.sentOn = conn.id;
    }
    // A link that is closing drops it; its close event fails the request.
    conn.link?.send(frame);
  }

  /** The caller of request `id` gives up; whether it had been written. */
  private giveUp(id: string): boolean {
    const p = this.pending.get(id);
    this.pending.delete(id);
    if (p?.sentOn !== undefined) return true;
    this.offline.withdraw((o) => o.id === id);
    const conn = this.conn;
    if (conn !== undefined) conn.writeQueue = conn.writeQueue.filter((o) => o.id !== id);
    return false;
  }

  // --- reading ------------------------------------------------------------

  private received(conn: Connection, frame: Frame): void {
    if (conn.ended || conn.codec === undefined) return;
    conn.lastHeard = Date.now();
    let env: Envelope;
    try {
      env = conn.codec.decode(frame);
    } catch {
      this.counters.undecodable += 1;
      return;
    }
    if (conn.inboundPending === 0 && env.type !== COMPRESSED) {
      this.dispatch(env);
      return;
    }
    // A compressed envelope inflates asynchronously: later ones wait for it.
    const codec = conn.codec;
    if (env.type === COMPRESSED) this.counters.compressedReceived += 1;
    conn.inboundPending += 1;
    conn.inbound = conn.inbound.then(async () => {
      try {
        this.dispatch(
          env.type === COMPRESSED ? await decompress(codec, env, this.opts.maxMessageSize) : env,
        );
      } catch {
        this.counters.undecodable += 1;
      } finally {
        conn.inboundPending -= 1;
      }
    });
  }

  private dispatch(env: Envelope): void {
    if (env.type === UNSUBSCRIBED) {
      const topic = (env.payload as { topic?: unknown } | undefined)?.topic;
      if (typeof topic === "string") this.presence.forget(topic);
    }
    if (!this.tracker.observe(env)) return;
    if (env.type === HEARTBEAT_ACK) {
      this.counters.heartbeatAcks += 1;
      return;
    }
    if (this.presence.observe(env)) return;
    const meta: Meta = env.meta ?? {};
    const id = meta.correlationId;
    if (id !== undefined) {
      const p = this.pending.get(id);
      if (env.type === PROGRESS) {
        if (p?.onProgress !== undefined) {
          try {
            p.onProgress(env.payload, meta);
          } catch (e) {
            report(e);
          }
        }
        return;
      }
      if (p !== undefined) {
        this.pending.delete(id);
        if (env.type === "ERROR") p.reject(new MessageError(errorPayload(env.payload), id));
        else if (env.type === "RPC_ERROR") p.reject(new RpcError(errorPayload(env.payload), id));
        else if (p.expect !== undefined && env.type !== p.expect) p.reject(new UnexpectedReplyError(env.type, p.expect));
        else p.resolve(env.payload);
        return;
      }
    }
    if (env.type === "ERROR" || env.type === "RPC_ERROR") {
      const payload = errorPayload(env.payload);
      emit(
        this.errorListeners,
        env.type === "ERROR" ? new MessageError(payload, id) : new RpcError(payload, id),
      );
      return;
    }
    for (const h of [...(this.handlers.get(env.type) ?? [])]) {
      try {
        h(env.payload, meta, env);
      } catch (e) {
        report(e);
      }
    }
    emit(this.anyHandlers, env);
  }
}

function envelope(type: string, meta: Meta | undefined, payload: unknown): Envelope {
  const env: Envelope = { type };
  if (meta !== undefined && Object.keys(meta).length > 0) env.meta = meta;
  if (payload !== undefined) env.payload = payload;
  return env;
}
