// The client against the real chat binary (docs/PROTOCOL.md §9): every
// codec, requests with deadlines and cancellation, ERROR vs RPC_ERROR, two
// clients in a room, and a Rust client in the same room.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import {
  AbortedError,
  MessageError,
  RpcError,
  TimeoutError,
} from "../dist/index.js";
import {
  anyClient,
  chatClient,
  join,
  startChat,
  startGuidePerformance,
  startRustMember,
  texts,
  waitFor,
} from "./helpers.mjs";

let chat;
before(async () => {
  chat = await startChat();
});
after(async () => {
  await chat?.stop("SIGTERM");
});

describe("codecs", () => {
  for (const codec of ["json", "msgpack", "json+gzip", "msgpack+gzip"]) {
    test(`${codec}: two clients exchange messages, and large envelopes are compressed only with +gzip`, async () => {
      const room = `codec-${codec}`;
      // The preferred codec is offered first, json after it: the server takes the first.
      const a = chatClient(chat.url, { codecs: [codec, "json"] });
      const b = chatClient(chat.url, { codecs: [codec] });
      try {
        assert.ok(await a.waitConnected());
        assert.ok(await b.waitConnected());
        assert.equal(a.codec, codec);
        assert.equal(b.codec, codec);
        const seenByB = texts(b);
        await join(a, room, "a");
        await join(b, room, "b");
        const long = "x".repeat(3000);
        await a.send("SEND_MESSAGE", { roomId: room, text: "hello" });
        await a.send("SEND_MESSAGE", { roomId: room, text: long });
        await a.send("SEND_MESSAGE", { roomId: room, text: "after the long one" });
        await waitFor("three messages at b", () => seenByB.length >= 3);
        assert.deepEqual(seenByB, ["hello", long, "after the long one"]);

        // A large request and its large reply.
        const big = { items: Array.from({ length: 200 }, (_, i) => ({ i, s: `item ${i}` })) };
        assert.deepEqual(await a.request("ECHO", big), big);

        const gzip = codec.endsWith("+gzip");
        const stats = a.stats();
        if (gzip) {
          assert.ok(stats.compressedSent >= 2, `sent compressed: ${stats.compressedSent}`);
          assert.ok(stats.compressedReceived >= 2, `received compressed: ${stats.compressedReceived}`);
        } else {
          assert.equal(stats.compressedSent, 0);
          assert.equal(stats.compressedReceived, 0);
        }
        assert.equal(stats.undecodable, 0);
      } finally {
        await a.close();
        await b.close();
      }
    });
  }

  test("msgpack keeps bin as bytes and absent payloads absent (ECHO)", async () => {
    const c = chatClient(chat.url, { codecs: ["msgpack"] });
    try {
      const bytes = new Uint8Array([0, 1, 2, 253, 254, 255]);
      const back = await c.request("ECHO", { bytes, n: -5, f: 1.5 });
      assert.ok(back.bytes instanceof Uint8Array);
      assert.deepEqual([...back.bytes], [...bytes]);
      assert.equal(back.n, -5);
      assert.equal(back.f, 1.5);
      assert.equal(await c.request("ECHO", undefined), undefined);
    } finally {
      await c.close();
    }
  });
});

describe("requests", () => {
  test("a request past its timeout fails with TimeoutError { sent: true }", async () => {
    // JOIN_ROOM is not an rpc route: its handler never replies.
    const c = anyClient(chat.url);
    try {
      assert.ok(await c.waitConnected());
      const started = Date.now();
      const err = await c.request("JOIN_ROOM", { roomId: "t" }, { timeout: 300 }).catch((e) => e);
      assert.ok(err instanceof TimeoutError, String(err));
      assert.equal(err.sent, true);
      assert.ok(Date.now() - started >= 250);
    } finally {
      await c.close();
    }
  });

  test("an aborted request fails with AbortedError, before or after it was written", async () => {
    const c = anyClient(chat.url);
    try {
      assert.ok(await c.waitConnected());
      const ctl = new AbortController();
      const pending = c.request("JOIN_ROOM", { roomId: "t" }, { signal: ctl.signal, timeout: 10_000 });
      setTimeout(() => ctl.abort("changed my mind"), 100);
      const err = await pending.catch((e) => e);
      assert.ok(err instanceof AbortedError, String(err));
      assert.equal(err.sent, true);
      assert.equal(err.reason, "changed my mind");

      const early = new AbortController();
      early.abort();
      const err2 = await c.request("ECHO", 1, { signal: early.signal }).catch((e) => e);
      assert.ok(err2 instanceof AbortedError);
      assert.equal(err2.sent, false);
      // The client goes on.
      assert.equal(await c.request("ECHO", 2), 2);
    } finally {
      await c.close();
    }
  });

  test("ERROR answers refusals and non-rpc routes, with the correlation id", async () => {
    const c = chatClient(chat.url);
    try {
      // SEND_MESSAGE to a room not joined: the route refuses (docs/PROTOCOL.md §9).
      const denied = await c
        .request("SEND_MESSAGE", { roomId: "nowhere", text: "hi" })
        .catch((e) => e);
      assert.ok(denied instanceof MessageError, String(denied));
      assert.ok(!(denied instanceof RpcError));
      assert.equal(denied.kind, "ERROR");
      assert.equal(denied.code, "PERMISSION_DENIED");
      assert.match(denied.correlationId, /^c\d+$/);

      // An unknown type is refused before routing.
      const unknown = anyClient(chat.url);
      try {
        const err = await unknown.request("NO_SUCH_TYPE", {}).catch((e) => e);
        assert.ok(err instanceof MessageError);
        assert.equal(err.code, "UNIMPLEMENTED");
      } finally {
        await unknown.close();
      }

      // A fire-and-forget send that fails reaches onError.
      const errors = [];
      c.onError((e) => errors.push(e));
      await c.send("SEND_MESSAGE", { roomId: "nowhere", text: "hi" });
      await waitFor("the ERROR", () => errors.length === 1);
      assert.ok(errors[0] instanceof MessageError);
      assert.equal(errors[0].code, "PERMISSION_DENIED");
      assert.equal(errors[0].correlationId, undefined);
    } finally {
      await c.close();
    }
  });

  test("RPC_ERROR and progress from a request/response route (guide_performance REPORT)", async () => {
    const guide = await startGuidePerformance();
    const c = anyClient(guide.url, { codecs: ["json+gzip"] });
    try {
      // size is at most 100,000: the rpc route refuses the payload.
      const err = await c.request("REPORT", { size: 1_000_000 }).catch((e) => e);
      assert.ok(err instanceof RpcError, String(err));
      assert.equal(err.kind, "RPC_ERROR");
      assert.equal(err.code, "INVALID_ARGUMENT");
      assert.match(err.message, /size/);
      // The same route answers a valid request (compressed: 20,000 bytes).
      const progress = [];
      const report = await c.request("REPORT", { size: 20_000 }, { onProgress: (p) => progress.push(p) });
      assert.equal(report.text.length, 20_000);
      // Long work shows progress: one message per quarter, before the reply.
      assert.deepEqual(progress, [5_000, 10_000, 15_000, 20_000].map((done) => ({ done, total: 20_000 })));
      assert.ok(c.stats().compressedReceived >= 1);
      // A wrong shape, too.
      const shape = await c.request("REPORT", { size: "big" }).catch((e) => e);
      assert.ok(shape instanceof RpcError);
      assert.equal(shape.code, "INVALID_ARGUMENT");
    } finally {
      await c.close();
      await guide.stop("SIGTERM");
    }
  });
});

describe("the Rust client", () => {
  for (const codec of ["json", "msgpack"]) {
    test(`a TypeScript client and the Rust client in one room (${codec})`, async () => {
      const room = `mixed-${codec}`;
      const ts = chatClient(chat.url, { codecs: [codec] });
      const seenByTs = texts(ts);
      const rust = await startRustMember(chat.url, codec, room, "rusty");
      try {
        await join(ts, room, "ts");
        await ts.send("SEND_MESSAGE", { roomId: room, text: "from typescript" });
        rust.say("from rust");
        await waitFor("the Rust message at the TS client", () => seenByTs.includes("from rust"));
        await waitFor("the TS message at the Rust client", () =>
          rust.received.some((m) => m.text === "from typescript"),
        );
        assert.deepEqual(
          rust.received.map((m) => m.text).filter((t) => t.startsWith("from ")).sort(),
          ["from rust", "from typescript"],
        );
      } finally {
        await rust.stop();
        await ts.close();
      }
    });
  }
});
