// WebTransport without a network: the length-prefixed framing of
// docs/PROTOCOL.md §5 over any chunking, the rule that picks WebTransport or
// WebSocket, and the client over a scripted WebTransport session (the
// server's side played by the test) falling back to a scripted WebSocket.
// The real session, in chromium against the chat, is
// examples/tests/browser/chat_page.mjs.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  Client,
  FrameReader,
  FrameTooLargeError,
  TransportChoice,
  closeCodeOf,
  encodeFrame,
} from "../dist/index.js";

const bytes = (...xs) => new Uint8Array(xs);
const text = (s) => new TextEncoder().encode(s);
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

describe("framing", () => {
  test("a frame is its 4-byte big-endian length, then its bytes", () => {
    assert.deepEqual(encodeFrame(bytes(7, 8, 9)), bytes(0, 0, 0, 3, 7, 8, 9));
    assert.deepEqual(encodeFrame(new Uint8Array(0)), bytes(0, 0, 0, 0));
    const big = encodeFrame(new Uint8Array(0x010203));
    assert.deepEqual(big.subarray(0, 4), bytes(0, 1, 2, 3));
  });

  test("coalesced frames in one chunk come out in order, empty frames included", () => {
    const r = new FrameReader(1024);
    const frames = r.push(concat(encodeFrame(text("one")), encodeFrame(new Uint8Array(0)), encodeFrame(text("three"))));
    assert.deepEqual(frames.map((f) => new TextDecoder().decode(f)), ["one", "", "three"]);
    assert.equal(r.buffered, 0);
  });

  test("every split of a stream of frames, byte by byte and at every cut, gives the same frames", () => {
    const payloads = ["a", "", "héllo wörld", "x".repeat(300)].map(text);
    const stream = concat(...payloads.map(encodeFrame));
    // One byte at a time: length prefixes are cut across chunks everywhere.
    const r1 = new FrameReader(1024);
    const got1 = [];
    for (let i = 0; i < stream.length; i++) got1.push(...r1.push(stream.subarray(i, i + 1)));
    assert.deepEqual(got1, payloads);
    // Two chunks, cut at every position.
    for (let cut = 0; cut <= stream.length; cut++) {
      const r = new FrameReader(1024);
      const got = [...r.push(stream.subarray(0, cut)), ...r.push(stream.subarray(cut))];
      assert.deepEqual(got, payloads, `cut at ${cut}`);
      assert.equal(r.buffered, 0);
    }
  });

  test("a partial frame is held until its last byte, and frames do not alias the reader's buffer", () => {
    const r = new FrameReader(1024);
    assert.deepEqual(r.push(bytes(0, 0)), []);
    assert.equal(r.buffered, 2);
    assert.deepEqual(r.push(bytes(0, 2, 1)), []);
    const [first] = r.push(concat(bytes(2), encodeFrame(bytes(3, 3))));
    assert.deepEqual(first, bytes(1, 2));
    // More data reuses the buffer: the frame handed out must not change.
    r.push(concat(encodeFrame(bytes(9, 9, 9, 9)), bytes(0, 0, 0)));
    assert.deepEqual(first, bytes(1, 2));
  });

  test("a length past the maximum is an error at once; frames before it are still given", () => {
    const r = new FrameReader(8);
    const ok = encodeFrame(bytes(1, 2, 3, 4, 5, 6, 7, 8)); // exactly the maximum
    // The bad prefix announces 9 bytes; none of them has arrived.
    const frames = r.push(concat(ok, bytes(0, 0, 0, 9)));
    assert.deepEqual(frames, [bytes(1, 2, 3, 4, 5, 6, 7, 8)]);
    assert.ok(r.error instanceof FrameTooLargeError);
    assert.equal(r.error.length, 9);
    assert.equal(r.error.max, 8);
    // Nothing more is read.
    assert.deepEqual(r.push(encodeFrame(bytes(1))), []);
    assert.equal(r.buffered, 0);
  });

  test("a huge announced length (4 GiB - 1) split across chunks is refused without buffering", () => {
    const r = new FrameReader(1024 * 1024);
    assert.deepEqual(r.push(bytes(0xff, 0xff)), []);
    assert.equal(r.error, undefined);
    assert.deepEqual(r.push(bytes(0xff, 0xff, 1, 2, 3)), []);
    assert.equal(r.error?.length, 0xffffffff);
    assert.equal(r.buffered, 0);
  });
});

describe("the transport choice", () => {
  test("without WebTransport, always WebSocket", () => {
    const c = new TransportChoice(false, 1000);
    assert.equal(c.next(0), "websocket");
    c.opened("websocket");
    assert.equal(c.next(10_000), "websocket");
  });

  test("WebTransport first; after a failure WebSocket until retryAfterMs has passed", () => {
    const c = new TransportChoice(true, 1000);
    assert.equal(c.next(0), "webtransport");
    c.failed(100);
    assert.equal(c.next(100), "websocket");
    assert.equal(c.next(1099), "websocket");
    assert.equal(c.next(1100), "webtransport");
    // Failed again: another period of WebSocket.
    c.failed(1200);
    assert.equal(c.next(1500), "websocket");
    // A WebSocket connection opening does not end the period...
    c.opened("websocket");
    assert.equal(c.next(1600), "websocket");
    // ... a WebTransport one that opens does.
    assert.equal(c.next(2200), "webtransport");
    c.opened("webtransport");
    assert.equal(c.next(2201), "webtransport");
  });

  test("session close codes map onto their WebSocket twins", () => {
    assert.deepEqual([0, 1, 2, 3, 4].map(closeCodeOf), [1000, 1001, 1002, 1008, 1011]);
    assert.equal(closeCodeOf(7), 4007);
    assert.equal(closeCodeOf(5000), undefined);
  });
});

// --- the client over scripted transports ----------------------------------

/** A WebTransport session whose server side the test scripts. */
class ScriptedSession {
  static all = [];
  static supportsProtocols = true;
  constructor(url, init) {
    this.url = url;
    this.init = init;
    this.protocol = undefined;
    this.closedWith = undefined;
    this.written = [];
    this.streams = 0;
    this.writerClosed = false;
    this.ready = new Promise((resolve, reject) => {
      this.accept = (protocol) => {
        if (ScriptedSession.supportsProtocols) this.protocol = protocol;
        resolve();
      };
      this.refuse = (why) => reject(new Error(why));
    });
    this.ready.catch(() => undefined);
    this.closed = new Promise((resolve, reject) => {
      this.serverClose = (closeCode, reason) => resolve({ closeCode, reason });
      this.lose = (why) => reject(new Error(why));
    });
    this.closed.catch(() => undefined);
    ScriptedSession.all.push(this);
  }
  /** The server writes `chunk` on the stream. */
  deliver(chunk) {
    this.controller.enqueue(chunk);
  }
  async createBidirectionalStream() {
    this.streams += 1;
    const session = this;
    const readable = new ReadableStream({
      start(controller) {
        session.controller = controller;
      },
    });
    const writable = new WritableStream({
      write(chunk) {
        session.written.push(chunk);
      },
      close() {
        session.writerClosed = true;
      },
    });
    return { readable, writable };
  }
  close(info) {
    this.closedWith = info;
    this.serverClose(info?.closeCode ?? 0, info?.reason ?? "");
  }
  /** The envelopes the client wrote, decoded from their frames (JSON). */
  envelopes() {
    const r = new FrameReader(1 << 20);
    return this.written.flatMap((c) => r.push(c)).map((f) => JSON.parse(new TextDecoder().decode(f)));
  }
}

/** A WebSocket whose server side the test scripts. */
class ScriptedSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.offered = protocols;
    this.protocol = "";
    this.sent = [];
    this.listeners = {};
    ScriptedSocket.all.push(this);
  }
  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }
  fire(type, event) {
    for (const fn of this.listeners[type] ?? []) fn(event);
  }
  accept() {
    this.protocol = this.offered[0];
    this.fire("open", { type: "open" });
  }
  send(frame) {
    this.sent.push(JSON.parse(frame));
  }
  close(code = 1000, reason = "") {
    this.fire("close", { type: "close", code, reason });
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));
async function until(what, pred, ms = 2000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function reset() {
  ScriptedSession.all = [];
  ScriptedSession.supportsProtocols = true;
  ScriptedSocket.all = [];
}

function client(options = {}, wt = {}) {
  return new Client("ws://scripted/ws", {
    WebSocket: ScriptedSocket,
    initialBackoffMs: 5,
    maxBackoffMs: 10,
    heartbeatIntervalMs: 50,
    heartbeatTimeoutMs: 20,
    webTransport: {
      url: "https://scripted:4433/wt",
      certificateHashes: ["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="],
      WebTransport: ScriptedSession,
      ...wt,
    },
    ...options,
  });
}

describe("the client over WebTransport", () => {
  test("offers its codecs as protocols and in the query, trusts the hashes, and exchanges framed envelopes", async () => {
    reset();
    const c = client({ codecs: ["json", "msgpack"] });
    c.on("HELLO", () => undefined);
    const seen = [];
    c.onMessage((e) => seen.push(e));
    await until("a session", () => ScriptedSession.all.length === 1);
    const s = ScriptedSession.all[0];
    assert.equal(s.url, "https://scripted:4433/wt?codec=json");
    assert.deepEqual(s.init.protocols, ["json", "msgpack"]);
    assert.equal(s.init.serverCertificateHashes[0].algorithm, "sha-256");
    assert.deepEqual(s.init.serverCertificateHashes[0].value, Uint8Array.from({ length: 32 }, (_, i) => i));
    s.accept("json");
    await until("connected", () => c.state.state === "connected");
    assert.equal(c.transport, "webtransport");
    assert.equal(c.state.transport, "webtransport");
    assert.equal(c.codec, "json");
    assert.equal(s.streams, 1);
    assert.equal(ScriptedSocket.all.length, 0);
    await c.send("HELLO", { n: 1 });
    await until("a write", () => s.written.length === 1);
    assert.deepEqual(s.envelopes(), [{ type: "HELLO", payload: { n: 1 } }]);
    // Two envelopes in one chunk, a third cut inside its length prefix.
    const one = encodeFrame(text(JSON.stringify({ type: "A", payload: 1 })));
    const two = encodeFrame(text(JSON.stringify({ type: "B", payload: 2 })));
    const three = encodeFrame(text(JSON.stringify({ type: "C", payload: 3 })));
    s.deliver(concat(one, two, three.subarray(0, 2)));
    s.deliver(three.subarray(2));
    await until("three messages", () => seen.length === 3);
    assert.deepEqual(seen.map((e) => e.type), ["A", "B", "C"]);
    // No heartbeats over WebTransport.
    await new Promise((r) => setTimeout(r, 120));
    assert.equal(c.stats().heartbeatsSent, 0);
    assert.equal(c.state.state, "connected");
    // A normal close finishes the stream, then closes the session with 0.
    await c.close();
    assert.equal(s.writerClosed, true);
    assert.equal(s.closedWith.closeCode, 0);
  });

  test("without the protocols option the query's codec is the one in use", async () => {
    reset();
    ScriptedSession.supportsProtocols = false;
    const c = client({ codecs: ["msgpack+gzip", "json"] });
    await until("a session", () => ScriptedSession.all.length === 1);
    const s = ScriptedSession.all[0];
    assert.equal(new URL(s.url).searchParams.get("codec"), "msgpack+gzip");
    s.accept("json");
    await until("connected", () => c.state.state === "connected");
    assert.equal(c.codec, "msgpack+gzip");
    await c.close();
  });

  test("a refused session falls back to WebSocket in the same attempt; later attempts stay on WebSocket until retryAfterMs", async () => {
    reset();
    const states = [];
    const c = client({}, { retryAfterMs: 60_000 });
    c.onState((s) => states.push(s.state));
    await until("a session", () => ScriptedSession.all.length === 1);
    ScriptedSession.all[0].refuse("UDP blocked");
    await until("a socket", () => ScriptedSocket.all.length === 1);
    // No reconnecting state in between: the same attempt went on.
    assert.deepEqual(states, ["connecting"]);
    ScriptedSocket.all[0].accept();
    await until("connected", () => c.state.state === "connected");
    assert.equal(c.transport, "websocket");
    assert.equal(c.stats().webTransportFallbacks, 1);
    assert.match(c.webTransportError, /UDP blocked/);
    assert.equal(c.stats().connections, 1);
    // Heartbeats run over WebSocket.
    await until("a heartbeat", () => c.stats().heartbeatsSent > 0);
    // The WebSocket drops: the reconnect skips WebTransport (failed < 60 s ago).
    ScriptedSocket.all[0].close(1001, "going away");
    await until("a second socket", () => ScriptedSocket.all.length === 2);
    assert.equal(ScriptedSession.all.length, 1);
    ScriptedSocket.all[1].accept();
    await until("reconnected", () => c.state.state === "connected");
    assert.equal(c.transport, "websocket");
    await c.close();
  });

  test("after retryAfterMs WebTransport is tried again, and a session lost once open is no failure", async () => {
    reset();
    const c = client({ heartbeatIntervalMs: 0 }, { retryAfterMs: 30 });
    await until("a session", () => ScriptedSession.all.length === 1);
    ScriptedSession.all[0].refuse("refused");
    await until("a socket", () => ScriptedSocket.all.length === 1);
    ScriptedSocket.all[0].accept();
    await until("connected", () => c.state.state === "connected");
    await new Promise((r) => setTimeout(r, 40));
    ScriptedSocket.all[0].close(1006, "");
    await until("a second session", () => ScriptedSession.all.length === 2);
    ScriptedSession.all[1].accept("json");
    await until("connected over WebTransport", () => c.transport === "webtransport");
    // The session is lost (no close from the server): the reconnect tries WebTransport again.
    const codes = [];
    c.onState((s) => s.state === "reconnecting" && codes.push(s.code));
    ScriptedSession.all[1].lose("connection reset");
    await until("a third session", () => ScriptedSession.all.length === 3);
    assert.deepEqual(codes, [1006]);
    assert.equal(ScriptedSocket.all.length, 1);
    assert.equal(c.stats().webTransportFallbacks, 1);
    await c.close();
  });

  test("a session not ready within connectTimeoutMs is given up for WebSocket", async () => {
    reset();
    const c = client({ heartbeatIntervalMs: 0 }, { connectTimeoutMs: 30 });
    await until("a socket", () => ScriptedSocket.all.length === 1, 3000);
    const s = ScriptedSession.all[0];
    assert.equal(s.closedWith?.closeCode, 0);
    assert.match(c.webTransportError, /timed out/);
    ScriptedSocket.all[0].accept();
    await until("connected", () => c.state.state === "connected");
    assert.equal(c.transport, "websocket");
    await c.close();
  });

  test("a constructor that throws (a hash it refuses) falls back too", async () => {
    reset();
    class Refusing {
      constructor() {
        throw new TypeError("bad hash");
      }
    }
    const c = client({ heartbeatIntervalMs: 0 }, { WebTransport: Refusing });
    await until("a socket", () => ScriptedSocket.all.length === 1);
    assert.match(c.webTransportError, /bad hash/);
    await c.close();
  });

  test("the server's close code maps to the WebSocket code in the state; going away reconnects over WebTransport", async () => {
    reset();
    const c = client({ heartbeatIntervalMs: 0 });
    await until("a session", () => ScriptedSession.all.length === 1);
    ScriptedSession.all[0].accept("json");
    await until("connected", () => c.state.state === "connected");
    const states = [];
    c.onState((s) => states.push(s));
    ScriptedSession.all[0].serverClose(1, "server shutting down");
    await until("reconnecting", () => states.length > 0);
    assert.equal(states[0].state, "reconnecting");
    assert.equal(states[0].code, 1001);
    assert.equal(states[0].reason, "server shutting down");
    await until("a second session", () => ScriptedSession.all.length === 2);
    await c.close();

    reset();
    const d = client({ heartbeatIntervalMs: 0, reconnect: false });
    await until("a session", () => ScriptedSession.all.length === 1);
    ScriptedSession.all[0].accept("json");
    await until("connected", () => d.state.state === "connected");
    ScriptedSession.all[0].serverClose(3, "authentication refused");
    await until("closed", () => d.state.state === "closed");
    assert.equal(d.state.code, 1008);
    assert.equal(d.state.reason, "authentication refused");
  });

  test("an oversized length from the server closes the session as a protocol violation (2); requests written fail", async () => {
    reset();
    const c = client({ heartbeatIntervalMs: 0, maxMessageSize: 64, reconnect: false });
    await until("a session", () => ScriptedSession.all.length === 1);
    const s = ScriptedSession.all[0];
    s.accept("json");
    await until("connected", () => c.state.state === "connected");
    const reply = c.request("ECHO", { x: 1 });
    await until("the request written", () => s.written.length === 1);
    s.deliver(bytes(0, 0, 0, 65));
    await assert.rejects(reply, (e) => e.name === "DisconnectedError");
    assert.equal(s.closedWith.closeCode, 2);
    assert.equal(c.state.state, "closed");
    assert.equal(c.state.code, 1002);
  });

  test("offline messages and the resume go out on the WebTransport session after a reconnect", async () => {
    reset();
    const c = client({ heartbeatIntervalMs: 0 });
    await until("a session", () => ScriptedSession.all.length === 1);
    const s = ScriptedSession.all[0];
    s.accept("json");
    await until("connected", () => c.state.state === "connected");
    // A publication on a topic with history: the client will resume it.
    s.deliver(encodeFrame(text(JSON.stringify({ type: "$sb:subscribed", payload: { topic: "room:a", epoch: "e1", offset: 4 } }))));
    s.deliver(encodeFrame(text(JSON.stringify({ type: "NEW", meta: { topic: "room:a", epoch: "e1", offset: 5 } }))));
    await tick();
    s.lose("gone");
    await until("reconnecting", () => c.state.state === "reconnecting");
    await c.send("QUEUED", { n: 1 });
    await until("a second session", () => ScriptedSession.all.length === 2);
    const s2 = ScriptedSession.all[1];
    s2.accept("json");
    await until("written", () => s2.envelopes().length === 2);
    const [resume, queued] = s2.envelopes();
    assert.equal(resume.type, "$sb:resume");
    assert.deepEqual(resume.payload.topics, [{ topic: "room:a", epoch: "e1", offset: 5 }]);
    assert.deepEqual(queued, { type: "QUEUED", payload: { n: 1 } });
    await c.close();
  });
});
