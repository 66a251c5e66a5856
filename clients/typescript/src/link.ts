// The seam between the client and a transport: one connection attempt, from
// its creation to its end, over WebSocket (docs/PROTOCOL.md §4) or
// WebTransport (webtransport.ts). The client sees open, frames and the end;
// it sends frames and closes.

import type { Frame } from "./codec.js";

/** The transports a client can use. */
export type TransportName = "websocket" | "webtransport";

/** What a link tells its client, each at most once except `frame`. */
export interface LinkEvents {
  /** The connection is open; `protocol` is the codec the server picked ("" for none). */
  open(protocol: string): void;
  /** A frame from the server. */
  frame(frame: Frame): void;
  /**
   * The connection ended (or could not be made). `code` is a WebSocket
   * close code (docs/PROTOCOL.md §4), WebTransport's mapped onto them (see
   * `closeCodeOf` in webtransport.ts); undefined when there was none.
   */
  closed(code: number | undefined, reason: string): void;
}

/** One connection attempt over one transport. */
export interface Link {
  /** The transport. */
  readonly transport: TransportName;
  /** Sends one frame (after `open`). */
  send(frame: Frame): void;
  /** Closes with a WebSocket close code (the transport's equivalent) and a reason. */
  close(code: number, reason: string): void;
  /** Drops the connection at once, without waiting for the peer. */
  terminate(reason: string): void;
}

/** What the client reads of a WebSocket event: `data` of messages, `code` and `reason` of the close. */
export interface SocketEvent {
  /** The event's type. */
  readonly type: string;
  /** A message's data. */
  readonly data?: unknown;
  /** The close code. */
  readonly code?: number;
  /** The close reason. */
  readonly reason?: string;
}

/** The WebSocket API this client needs: the browser's, or `ws`'s in Node. */
export interface WebSocketLike {
  /** The subprotocol the server picked. */
  readonly protocol: string;
  /** How binary messages are delivered; set to `"arraybuffer"`. */
  binaryType: string;
  /** Sends a text (string) or binary frame. */
  send(data: string | Uint8Array): void;
  /** Starts the closing handshake. */
  close(code?: number, reason?: string): void;
  /** Listens to the socket's events. */
  addEventListener(type: "open" | "message" | "close" | "error", listener: (event: SocketEvent) => void): void;
}

/** A WebSocket class: `globalThis.WebSocket` in browsers, `ws`'s `WebSocket` in Node. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

function toFrame(data: unknown): Frame | undefined {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return undefined;
}

/** A frame of a type the client cannot read (a Blob): handed on as an empty text, which does not decode. */
const UNREADABLE: Frame = "";

/** A link over one WebSocket, offering `codecs` as subprotocols (docs/PROTOCOL.md §2). */
export class WebSocketLink implements Link {
  readonly transport = "websocket";
  private readonly ws: WebSocketLike;
  private open = false;

  /** Throws what the WebSocket constructor throws (a malformed URL). */
  constructor(WS: WebSocketConstructor, url: string, codecs: readonly string[], events: LinkEvents) {
    const ws = new WS(url, [...codecs]);
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("open", () => {
      this.open = true;
      events.open(ws.protocol);
    });
    ws.addEventListener("message", (event) => events.frame(toFrame(event.data) ?? UNREADABLE));
    ws.addEventListener("close", (event) =>
      events.closed(
        event.code,
        event.reason !== undefined && event.reason !== ""
          ? event.reason
          : this.open
            ? "the connection was lost"
            : "the connection could not be made",
      ),
    );
    ws.addEventListener("error", () => undefined);
  }

  send(frame: Frame): void {
    try {
      this.ws.send(frame);
    } catch {
      // The socket is closing; its close event follows.
    }
  }

  close(code: number, reason: string): void {
    try {
      this.ws.close(code, reason);
    } catch {
      // Already closed.
    }
  }

  terminate(reason: string): void {
    const ws = this.ws as WebSocketLike & { terminate?: () => void };
    try {
      if (typeof ws.terminate === "function") ws.terminate();
      else ws.close(4000, reason.slice(0, 100));
    } catch {
      // Already closed.
    }
  }
}
