// The client's protocol logic without sockets: a scripted WebSocket plays
// the server. What the example servers cannot show is tested here: progress
// messages (no example route sends them), an unexpected reply type,
// duplicate publications, the inflate limit, the backoff.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  Client,
  DecodeError,
  RpcError,
  UnexpectedReplyError,
  codecByName,
  compress,
  decompress,
} from "../dist/index.js";
import { Backoff } from "../dist/backoff.js";

/** A WebSocket whose server side the test scripts. */
class ScriptedSocket {
  static last;
  constructor(url, protocols) {
    this.url = url;
    this.offered = protocols;
    this.protocol = "";
    this.binaryType = "blob";
    this.sent = [];
    this.listeners = {};
    ScriptedSocket.last = this;
  }
  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }
  fire(type, event) {
    for (const fn of this.listeners[type] ?? []) fn(event);
  }
  /** The server accepts with the client's first codec. */
  accept() {
    this.protocol = this.offered[0];
    this.fire("open", { type: "open" });
  }
  /** The server sends `envelope` (JSON). */
  deliver(envelope) {
    this.fire("message", { type: "message", data: JSON.stringify(envelope) });
  }
  send(frame) {
    this.sent.push(JSON.parse(frame));
  }
  close(code = 1000, reason = "") {
    this.fire("close", { type: "close", code, reason });
  }
}

async function connected(options = {}) {
  const client = new Client("ws://scripted/ws", { WebSocket: ScriptedSocket, heartbeatIntervalMs: 0, ...options });
  await Promise.resolve();
  const socket = ScriptedSocket.last;
  socket.accept();
  assert.equal(client.state.state, "connected");
  return { client, socket };
}

describe("requests", () => {
  test("progress messages reach onProgress in order, then the reply resolves", async () => {
    const { client, socket } = await connected();
    const progress = [];
    const reply = client.request("EXPORT", { rows: 3 }, { onProgress: (p, meta) => progress.push([p, meta.correlationId]) });
    const sent = socket.sent.at(-1);
    assert.equal(sent.type, "EXPORT");
    const id = sent.meta.correlationId;
    socket.deliver({ type: "$ws:rpc-progress", meta: { correlationId: id }, payload: { done: 1 } });
    socket.deliver({ type: "$ws:rpc-progress", meta: { correlationId: id }, payload: { done: 2 } });
    socket.deliver({ type: "EXPORTED", meta: { correlationId: id }, payload: { url: "/x" } });
    assert.deepEqual(await reply, { url: "/x" });
    assert.deepEqual(progress, [[{ done: 1 }, id], [{ done: 2 }, id]]);
    // Progress after the reply goes nowhere.
    socket.deliver({ type: "$ws:rpc-progress", meta: { correlationId: id }, payload: { done: 3 } });
    assert.equal(progress.length, 2);
    await client.close();
  });

  test("a reply of another type than replyTypes says fails; RPC_ERROR without a request goes to onError", async () => {
    const { client, socket } = await connected({ replyTypes: { ECHO: "ECHO" } });
    const reply = client.request("ECHO", 1);
    const id = socket.sent.at(-1).meta.correlationId;
    socket.deliver({ type: "SOMETHING_ELSE", meta: { correlationId: id }, payload: 1 });
    const err = await reply.catch((e) => e);
    assert.ok(err instanceof UnexpectedReplyError);
    const errors = [];
    client.onError((e) => errors.push(e));
    socket.deliver({ type: "RPC_ERROR", payload: { code: "INTERNAL", message: "boom", retryable: true } });
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof RpcError);
    assert.equal(errors[0].retryable, true);
    await client.close();
  });
});

describe("connecting", () => {
  test("failed attempts are retried with backoff and do not count as connections", async () => {
    const client = new Client("ws://scripted/ws", {
      WebSocket: ScriptedSocket,
      heartbeatIntervalMs: 0,
      initialBackoffMs: 1,
      maxBackoffMs: 2,
    });
    const states = [];
    client.onState((s) => states.push(s));
    await Promise.resolve();
    const first = ScriptedSocket.last;
    first.close(1006, "");
    await new Promise((r) => setTimeout(r, 20));
    const second = ScriptedSocket.last;
    assert.notEqual(second, first);
    second.accept();
    assert.deepEqual(
      states.map((s) => s.state),
      ["connecting", "reconnecting", "connected"],
    );
    assert.equal(states[1].attempt, 1);
    assert.equal(states[1].code, 1006);
    assert.equal(states[1].reason, "the connection could not be made");
    assert.equal(states[2].reconnect, false);
    assert.equal(client.stats().connections, 1);
    await client.close();
    assert.deepEqual(states.at(-1), { state: "closed", code: 1000, reason: "closed by the client" });
  });
});

describe("positions", () => {
  test("a publication seen already is dropped; the resume lists the last position", async () => {
    const { client, socket } = await connected({ initialBackoffMs: 1, maxBackoffMs: 1 });
    const seen = [];
    client.on("NEW", (p) => seen.push(p));
    const meta = (offset) => ({ topic: "t", epoch: "e1", offset });
    socket.deliver({ type: "$sb:subscribed", payload: { topic: "t", epoch: "e1", offset: 4 } });
    socket.deliver({ type: "NEW", meta: meta(4), payload: 4 });
    socket.deliver({ type: "NEW", meta: meta(5), payload: 5 });
    socket.deliver({ type: "NEW", meta: meta(5), payload: 5 });
    socket.deliver({ type: "NEW", meta: meta(6), payload: 6 });
    assert.deepEqual(seen, [5, 6]);
    socket.close(1006, "");
    await new Promise((r) => setTimeout(r, 20));
    const next = ScriptedSocket.last;
    assert.notEqual(next, socket);
    next.accept();
    assert.deepEqual(next.sent[0], {
      type: "$sb:resume",
      payload: { topics: [{ topic: "t", epoch: "e1", offset: 6 }] },
    });
    const recoveries = [];
    client.onRecovery((r) => recoveries.push(r));
    next.deliver({ type: "$sb:resumed", payload: { topics: [{ topic: "t" }] } });
    next.deliver({ type: "$sb:subscribed", payload: { topic: "t", epoch: "e1", offset: 9, recovered: true } });
    assert.deepEqual(recoveries, [{ topic: "t", recovered: true, position: { epoch: "e1", offset: 9 } }]);
    await client.close();
  });
});

describe("compressed envelopes", () => {
  for (const name of ["json+gzip", "msgpack+gzip"]) {
    test(`${name}: round trip, and inflating stops at the limit`, async () => {
      const codec = codecByName(name);
      const inner = { type: "BIG", payload: "y".repeat(100_000) };
      const wrapped = codec.decode(await compress(codec, codec.encode(inner)));
      assert.equal(wrapped.type, "COMPRESSED");
      assert.deepEqual(await decompress(codec, wrapped, 1 << 20), inner);
      const err = await decompress(codec, wrapped, 10_000).catch((e) => e);
      assert.ok(err instanceof DecodeError);
      assert.match(err.message, /inflates past 10000 bytes/);
    });
  }
});

test("backoff delays double within their jitter up to the cap", () => {
  let r = 0;
  const draws = [0, 0.999, 0.5];
  const backoff = new Backoff(100, 1000, () => draws[r++ % draws.length]);
  let ceiling = 100;
  for (let i = 0; i < 8; i++) {
    const d = backoff.next();
    assert.ok(d >= ceiling / 2 && d <= ceiling, `${d} vs ${ceiling}`);
    ceiling = Math.min(ceiling * 2, 1000);
  }
  assert.equal(backoff.attempt, 8);
  backoff.reset();
  assert.ok(backoff.next() <= 100);
});
