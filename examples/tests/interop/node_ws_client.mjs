// Independent Node client for the signalbox WebSocket protocol (docs/PROTOCOL.md §1-§4, §6, §9),
// written against the wire format only, with npm `ws` and `@msgpack/msgpack`.
//
//   node node_ws_client.mjs ws://127.0.0.1:8080/ws
//
// Prints "ok - …" / "not ok - …" per check and a closing "N passed, N failed";
// exits 1 on any mismatch.
import WebSocket from "ws";
import { Encoder, Decoder } from "@msgpack/msgpack";
import { gzipSync, gunzipSync } from "node:zlib";
import { isDeepStrictEqual } from "node:util";

const URL_ = process.argv[2];
if (!URL_) {
  console.error("usage: node node_ws_client.mjs WS_URL   (e.g. ws://127.0.0.1:8080/ws)");
  process.exit(2);
}
const TIMEOUT = 5_000;
const OVERALL_TIMEOUT = 60_000;
const RUN = Math.random().toString(36).slice(2, 8);

const overall = setTimeout(() => {
  console.error(`FAIL: did not finish within ${OVERALL_TIMEOUT / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT);
overall.unref();

// useBigInt64: int64/uint64 decode as BigInt and BigInt encodes as int64/uint64,
// so an integer above 2^53 survives the round trip.
const mpEncoder = new Encoder({ useBigInt64: true });
const mpDecoder = new Decoder({ useBigInt64: true });

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}: ${e.message}`);
  }
}
function assert(cond, what) {
  if (!cond) throw new Error(what);
}
const show = (v) =>
  JSON.stringify(v, (_k, x) =>
    typeof x === "bigint" ? `${x}n` : x instanceof Uint8Array ? `<bin ${Buffer.from(x).toString("hex")}>` : x);
const isInt = (v) => typeof v === "bigint" || Number.isInteger(v);

/** One connection with a codec, an inbox and predicate-based waits. */
class Client {
  constructor(ws, codec) {
    this.ws = ws;
    this.codec = codec; // json | msgpack | json+gzip | msgpack+gzip
    this.base = codec.replace("+gzip", "");
    this.inbox = [];
    this.waiters = [];
    this.closed = null;
    this.raw = []; // raw JSON texts, for checks that JSON.parse would blur
    ws.on("message", (data, isBinary) => this.#receive(data, isBinary));
    ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      for (const w of this.waiters) w.wake();
    });
  }

  static connect(codecOrList, { expectProtocol } = {}) {
    const protocols = codecOrList === undefined ? undefined : [].concat(codecOrList);
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(URL_, protocols, { handshakeTimeout: TIMEOUT });
      ws.once("open", () => {
        const picked = ws.protocol || "json";
        if (expectProtocol !== undefined && ws.protocol !== expectProtocol) {
          ws.terminate();
          reject(new Error(`server picked subprotocol "${ws.protocol}", expected "${expectProtocol}"`));
          return;
        }
        resolve(new Client(ws, picked));
      });
      ws.once("unexpected-response", (_req, res) => {
        reject(new Error(`upgrade refused with HTTP ${res.statusCode}`));
        res.resume();
        ws.terminate();
      });
      ws.once("error", (e) => reject(new Error(`connect: ${e.message}`)));
    });
  }

  #decodeOne(bytesOrText) {
    if (this.base === "msgpack") return mpDecoder.decode(bytesOrText);
    const text = typeof bytesOrText === "string" ? bytesOrText : Buffer.from(bytesOrText).toString("utf8");
    this.raw.push(text);
    return JSON.parse(text);
  }

  #receive(data, isBinary) {
    let msg;
    try {
      if (this.base === "msgpack" && !isBinary) throw new Error("msgpack connection got a text frame");
      msg = this.#decodeOne(this.base === "msgpack" ? new Uint8Array(data) : data.toString("utf8"));
      if (msg && msg.type === "COMPRESSED") {
        msg = this.#unwrap(msg);
      } else if (msg) {
        msg.__frame = { isBinary, compressed: false, size: data.length };
      }
    } catch (e) {
      msg = { type: "__undecodable", error: e.message };
    }
    this.inbox.push(msg);
    for (const w of this.waiters) w.wake();
  }

  #unwrap(wrapper) {
    const keys = Object.keys(wrapper).sort().join(",");
    if (keys !== "payload,type") throw new Error(`COMPRESSED wrapper has keys ${keys} (expected type,payload only)`);
    const { encoding, data } = wrapper.payload || {};
    if (encoding !== "gzip") throw new Error(`COMPRESSED encoding ${encoding}`);
    let gz;
    if (this.base === "json") {
      if (typeof data !== "string") throw new Error("COMPRESSED data is not a base64 string in JSON");
      gz = Buffer.from(data, "base64");
    } else {
      if (!(data instanceof Uint8Array)) throw new Error("COMPRESSED data is not bin in MessagePack");
      gz = Buffer.from(data);
    }
    const inner = this.#decodeOne(this.base === "json" ? gunzipSync(gz).toString("utf8") : new Uint8Array(gunzipSync(gz)));
    inner.__frame = { compressed: true };
    return inner;
  }

  encode(msg) {
    if (this.base === "msgpack") return mpEncoder.encode(msg);
    return JSON.stringify(msg);
  }

  send(msg) {
    const data = typeof msg === "string" || msg instanceof Uint8Array ? msg : this.encode(msg);
    this.ws.send(data, { binary: typeof data !== "string" });
  }

  /** Sends `msg` gzip-wrapped as a COMPRESSED envelope (§3). */
  sendCompressed(msg) {
    const inner = this.encode(msg);
    const gz = gzipSync(typeof inner === "string" ? Buffer.from(inner, "utf8") : inner);
    const data = this.base === "json" ? gz.toString("base64") : new Uint8Array(gz);
    this.send({ type: "COMPRESSED", payload: { encoding: "gzip", data } });
  }

  /** Resolves with (and removes) the first received message matching `pred`. */
  expect(pred, what, timeout = TIMEOUT) {
    return new Promise((resolve, reject) => {
      const waiter = {
        wake: () => {
          const i = this.inbox.findIndex((m) => {
            try { return pred(m); } catch { return false; }
          });
          if (i >= 0) {
            const [m] = this.inbox.splice(i, 1);
            done();
            resolve(m);
          } else if (this.closed) {
            done();
            reject(new Error(`${what}: connection closed (${this.closed.code} ${this.closed.reason}); got ${this.#seen()}`));
          }
        },
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${what}: nothing within ${timeout} ms; got ${this.#seen()}`));
      }, timeout);
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== waiter);
      };
      this.waiters.push(waiter);
      waiter.wake();
    });
  }

  /**
   * The answer to the request with correlationId `cid`: the first message carrying it,
   * or the first ERROR/RPC_ERROR (then its correlationId must be `cid`), so that a
   * missing correlationId fails at once instead of timing out.
   */
  async expectReply(cid, what, timeout = TIMEOUT) {
    const m = await this.expect(
      (x) => hasCid(cid)(x) || x.type === "ERROR" || x.type === "RPC_ERROR", what, timeout);
    assert(m.meta && m.meta.correlationId === cid,
      `${what}: reply should carry correlationId ${show(cid)}: ${show(stripFrame(m))}`);
    return m;
  }

  /** Resolves when nothing matching `pred` arrives within `ms`. */
  async expectNone(pred, what, ms = 500) {
    await new Promise((r) => setTimeout(r, ms));
    const m = this.inbox.find((x) => { try { return pred(x); } catch { return false; } });
    assert(!m, `${what}: unexpected ${show(m)}`);
  }

  #seen() {
    return this.inbox.length ? this.inbox.map((m) => show(stripFrame(m))).join(" ").slice(0, 600) : "nothing";
  }

  close() {
    if (this.closed) return Promise.resolve(this.closed);
    return new Promise((resolve) => {
      this.ws.once("close", (code) => resolve({ code }));
      this.ws.close(1000);
      setTimeout(() => { this.ws.terminate(); resolve({ code: 1006 }); }, 2000).unref();
    });
  }
}

function stripFrame(m) {
  if (!m || typeof m !== "object") return m;
  const { __frame, ...rest } = m;
  return rest;
}

const hasCid = (cid) => (m) => m.meta && m.meta.correlationId === cid;
const errorOf = (cid, code) => (m) => m.type === "ERROR" && hasCid(cid)(m) && m.payload && m.payload.code === code;

function checkTimestamp(m, what) {
  assert(m.meta && isInt(m.meta.timestamp) && Number(m.meta.timestamp) > 1.5e12,
    `${what}: meta.timestamp should be an integer in ms, got ${show(m.meta)}`);
}

function checkErrorShape(m, code) {
  const p = m.payload;
  assert(p && p.code === code, `payload.code ${show(p && p.code)} != ${code}`);
  assert(typeof p.message === "string", `payload.message should be a string: ${show(p)}`);
  checkTimestamp(m, "ERROR");
}

// ---------------------------------------------------------------------------

async function codecChecks(codec) {
  let c;
  const room = `interop-node-${codec}-${RUN}`;
  let me;

  await check(`${codec}: upgrade picks subprotocol ${codec}`, async () => {
    c = await Client.connect(codec, { expectProtocol: codec });
  });
  if (!c) return;

  await check(`${codec}: JOIN_ROOM -> USER_JOINED with own userId`, async () => {
    c.send({ type: "JOIN_ROOM", meta: { correlationId: "join-1" }, payload: { roomId: room, username: `node-${codec}` } });
    const m = await c.expect((x) => x.type === "USER_JOINED" && x.payload.roomId === room, "USER_JOINED");
    assert(typeof m.payload.userId === "string" && m.payload.userId.length > 0, `userId should be a non-empty string: ${show(m.payload)}`);
    assert(m.payload.username === `node-${codec}`, `username ${show(m.payload.username)}`);
    checkTimestamp(m, "USER_JOINED");
    me = m.payload.userId;
  });

  await check(`${codec}: second JOIN_ROOM is a no-op`, async () => {
    c.send({ type: "JOIN_ROOM", payload: { roomId: room, username: `node-${codec}` } });
    c.send({ type: "ECHO", meta: { correlationId: "sync-join" } });
    await c.expectReply("sync-join", "ECHO after second join");
    await c.expectNone((x) => x.type === "USER_JOINED" || x.type === "ERROR", "second JOIN_ROOM", 200);
  });

  await check(`${codec}: SEND_MESSAGE -> NEW_MESSAGE (userId, meta.clientId)`, async () => {
    const text = `hello from node ${codec} — ünïcødé 🚀`;
    c.send({ type: "SEND_MESSAGE", meta: { correlationId: "send-1", clientId: "forged" }, payload: { roomId: room, text } });
    const m = await c.expect((x) => x.type === "NEW_MESSAGE" && x.payload.roomId === room, "NEW_MESSAGE");
    assert(m.payload.text === text, `text ${show(m.payload.text)}`);
    assert(m.payload.userId === me, `payload.userId ${show(m.payload.userId)} != own ${show(me)}`);
    assert(m.meta && m.meta.clientId === me, `meta.clientId ${show(m.meta && m.meta.clientId)} != ${show(me)} (forged clientId must be dropped)`);
    assert(isInt(m.payload.timestamp), `payload.timestamp ${show(m.payload.timestamp)}`);
    checkTimestamp(m, "NEW_MESSAGE");
  });

  await check(`${codec}: ECHO round trip with correlationId and identical payload`, async () => {
    let m;
    if (codec === "msgpack") {
      const payload = {
        big: 18446744073709551615n, // u64::MAX
        above53: 9007199254740993n, // 2^53 + 1
        negBig: -9007199254740993n,
        float: 0.1,
        float2: -2.5,
        small: 42,
        neg: -7,
        bin: new Uint8Array([0, 1, 2, 254, 255]),
        str: "ünïcødé",
        nested: { list: [1, "two", null, true, { x: 3.25 }], empty: {} },
      };
      c.send({ type: "ECHO", meta: { correlationId: "echo-1" }, payload });
      m = await c.expectReply("echo-1", "ECHO reply");
      assert(m.type === "ECHO", `type ${m.type}: ${show(stripFrame(m))}`);
      // Integers that fit in 32 bits decode as numbers; compare with that in mind.
      const norm = (v) =>
        typeof v === "bigint" && v >= -(2n ** 31n) && v < 2n ** 32n ? Number(v)
          : Array.isArray(v) ? v.map(norm)
          : v && typeof v === "object" && !(v instanceof Uint8Array) ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, norm(x)]))
          : v;
      const got = norm(m.payload);
      assert(got && got.bin instanceof Uint8Array, `bin came back as ${show(got && got.bin)} (expected MessagePack bin)`);
      assert(isDeepStrictEqual({ ...got, bin: Array.from(got.bin) }, { ...norm(payload), bin: Array.from(payload.bin) }),
        `payload differs:\n  sent ${show(payload)}\n  got  ${show(m.payload)}`);
    } else {
      // Raw JSON text so that integers above 2^53 are checked digit for digit.
      const raw = '{"type":"ECHO","meta":{"correlationId":"echo-1"},"payload":{"big":18446744073709551615,"above53":9007199254740993,"negBig":-9007199254740993,"float":0.1,"float2":-2.5,"small":42,"str":"ünïcødé","nested":{"list":[1,"two",null,true,{"x":3.25}],"empty":{}}}}';
      c.raw.length = 0;
      c.send(raw);
      m = await c.expectReply("echo-1", "ECHO reply");
      assert(m.type === "ECHO", `type ${m.type}: ${show(stripFrame(m))}`);
      const text = c.raw.find((t) => t.includes('"echo-1"'));
      for (const lit of ["18446744073709551615", "9007199254740993", "-9007199254740993"]) {
        assert(new RegExp(`[:\\[,]\\s*${lit}\\s*[,}\\]]`).test(text), `integer ${lit} not echoed exactly: ${text}`);
      }
      const sent = JSON.parse(raw).payload;
      assert(isDeepStrictEqual(m.payload, sent), `payload differs:\n  sent ${show(sent)}\n  got  ${show(m.payload)}`);
    }
    checkTimestamp(m, "ECHO");
  });

  if (codec === "json") {
    await check("json: an envelope in a binary frame is accepted too", async () => {
      c.send(new TextEncoder().encode('{"type":"ECHO","meta":{"correlationId":"json-bin"},"payload":[1,2]}'));
      const m = await c.expectReply("json-bin", "ECHO reply");
      assert(m.type === "ECHO" && isDeepStrictEqual(m.payload, [1, 2]), show(stripFrame(m)));
    });
  }

  await check(`${codec}: ECHO without payload answered without one`, async () => {
    c.send({ type: "ECHO", meta: { correlationId: "echo-empty" } });
    const m = await c.expectReply("echo-empty", "ECHO reply");
    assert(m.type === "ECHO", `type ${m.type}`);
    assert(!("payload" in m), `reply has a payload: ${show(stripFrame(m))}`);
    checkTimestamp(m, "ECHO");
  });

  await check(`${codec}: SEND_MESSAGE to a room not joined -> ERROR PERMISSION_DENIED`, async () => {
    c.send({ type: "SEND_MESSAGE", meta: { correlationId: "perm-1" }, payload: { roomId: `not-joined-${RUN}`, text: "x" } });
    const m = await c.expectReply("perm-1", "error reply");
    assert(m.type === "ERROR", `type ${m.type}: ${show(stripFrame(m))}`);
    checkErrorShape(m, "PERMISSION_DENIED");
  });

  await check(`${codec}: unknown type -> ERROR UNIMPLEMENTED with correlationId`, async () => {
    c.send({ type: "NO_SUCH_TYPE_X", meta: { correlationId: "unimpl-1" }, payload: { a: 1 } });
    const m = await c.expectReply("unimpl-1", "error reply");
    assert(m.type === "ERROR", `type ${m.type}: ${show(stripFrame(m))}`);
    checkErrorShape(m, "UNIMPLEMENTED");
  });

  await check(`${codec}: unknown top-level key -> ERROR INVALID_ARGUMENT with correlationId`, async () => {
    c.send({ type: "SEND_MESSAGE", meta: { correlationId: "badkey-1" }, payload: { roomId: room, text: "x" }, bogus: 1 });
    const m = await c.expectReply("badkey-1", "error reply");
    assert(m.type === "ERROR", `type ${m.type}: ${show(stripFrame(m))}`);
    checkErrorShape(m, "INVALID_ARGUMENT");
    await c.expectNone((x) => x.type === "NEW_MESSAGE" && x.payload.text === "x", "rejected SEND_MESSAGE", 100);
  });

  await check(`${codec}: reserved type from a client -> ERROR INVALID_ARGUMENT`, async () => {
    c.send({ type: "$reserved", meta: { correlationId: "reserved-1" } });
    const m = await c.expectReply("reserved-1", "error reply");
    assert(m.type === "ERROR", `type ${m.type}: ${show(stripFrame(m))}`);
    checkErrorShape(m, "INVALID_ARGUMENT");
  });

  await check(`${codec}: payload of the wrong shape -> ERROR INVALID_ARGUMENT`, async () => {
    c.send({ type: "SEND_MESSAGE", meta: { correlationId: "shape-1" }, payload: { roomId: room, text: 5 } });
    const m = await c.expectReply("shape-1", "error reply");
    assert(m.type === "ERROR", `type ${m.type}: ${show(stripFrame(m))}`);
    checkErrorShape(m, "INVALID_ARGUMENT");
  });

  await check(`${codec}: undecodable message -> ERROR INVALID_ARGUMENT, connection kept`, async () => {
    c.send(codec === "json" ? "{not json" : new Uint8Array([0xc1]));
    const m = await c.expect((x) => x.type === "ERROR", "error reply");
    checkErrorShape(m, "INVALID_ARGUMENT");
  });

  await check(`${codec}: __heartbeat -> __heartbeat_ack with meta.timestamp`, async () => {
    c.send({ type: "__heartbeat" });
    const m = await c.expect((x) => x.type === "__heartbeat_ack", "__heartbeat_ack");
    checkTimestamp(m, "__heartbeat_ack");
    if (codec === "msgpack") assert(m.__frame && m.__frame.isBinary, "ack should be a binary (MessagePack) frame");
  });

  await check(`${codec}: connection still open after the errors`, async () => {
    c.send({ type: "ECHO", meta: { correlationId: "still-open" }, payload: "ping" });
    const m = await c.expectReply("still-open", "ECHO reply");
    assert(m.type === "ECHO" && m.payload === "ping", show(stripFrame(m)));
    assert(!c.closed, "closed");
  });

  await check(`${codec}: LEAVE_ROOM then SEND_MESSAGE -> PERMISSION_DENIED`, async () => {
    c.send({ type: "LEAVE_ROOM", payload: { roomId: room } });
    c.send({ type: "SEND_MESSAGE", meta: { correlationId: "after-leave" }, payload: { roomId: room, text: "x" } });
    const m = await c.expectReply("after-leave", "error reply");
    assert(m.type === "ERROR", `type ${m.type}: ${show(stripFrame(m))}`);
    checkErrorShape(m, "PERMISSION_DENIED");
    c.send({ type: "LEAVE_ROOM", meta: { correlationId: "leave-again" }, payload: { roomId: room } });
    await c.expectNone(hasCid("leave-again"), "leaving a room not joined is a no-op", 200);
  });

  await check(`${codec}: normal close`, async () => {
    const { code } = await c.close();
    assert(code === 1000, `close code ${code}`);
  });
}

async function mixedChecks() {
  const room = `interop-node-mixed-${RUN}`;
  let j, m, jId, mId;
  await check("mixed: json and msgpack clients share a room, each in its own codec", async () => {
    j = await Client.connect("json", { expectProtocol: "json" });
    m = await Client.connect("msgpack", { expectProtocol: "msgpack" });
    j.send({ type: "JOIN_ROOM", payload: { roomId: room, username: "j" } });
    jId = (await j.expect((x) => x.type === "USER_JOINED" && x.payload.username === "j", "j joined")).payload.userId;
    m.send({ type: "JOIN_ROOM", payload: { roomId: room, username: "m" } });
    mId = (await m.expect((x) => x.type === "USER_JOINED" && x.payload.username === "m", "m joined (own)")).payload.userId;
    const seen = await j.expect((x) => x.type === "USER_JOINED" && x.payload.username === "m", "j sees m join");
    assert(seen.payload.userId === mId && mId !== jId, `userIds ${show([jId, mId, seen.payload.userId])}`);
    m.send({ type: "SEND_MESSAGE", payload: { roomId: room, text: "from msgpack" } });
    const a = await j.expect((x) => x.type === "NEW_MESSAGE" && x.payload.text === "from msgpack", "json client gets msgpack's message");
    assert(a.payload.userId === mId && a.meta.clientId === mId, show(a));
    assert(a.__frame && !a.__frame.isBinary, "json client should get a text frame");
    j.send({ type: "SEND_MESSAGE", payload: { roomId: room, text: "from json" } });
    const b = await m.expect((x) => x.type === "NEW_MESSAGE" && x.payload.text === "from json", "msgpack client gets json's message");
    assert(b.payload.userId === jId && b.meta.clientId === jId, show(b));
  });
  if (!j || !m || !mId) return;
  await check("mixed: LEAVE_ROOM -> USER_LEFT to the room", async () => {
    m.send({ type: "LEAVE_ROOM", payload: { roomId: room } });
    const x = await j.expect((y) => y.type === "USER_LEFT" && y.payload.userId === mId, "USER_LEFT");
    assert(x.payload.roomId === room, show(x));
  });
  await check("mixed: a disconnect leaves every room (USER_LEFT)", async () => {
    m.send({ type: "JOIN_ROOM", payload: { roomId: room, username: "m" } });
    await j.expect((y) => y.type === "USER_JOINED" && y.payload.userId === mId, "m rejoined");
    m.ws.terminate();
    await j.expect((y) => y.type === "USER_LEFT" && y.payload.userId === mId, "USER_LEFT after disconnect");
  });
  await j.close();
}

async function gzipChecks(codec) {
  let c;
  await check(`${codec}: upgrade picks subprotocol ${codec}`, async () => {
    c = await Client.connect(codec, { expectProtocol: codec });
  });
  if (!c) return;
  await check(`${codec}: small reply uncompressed, large reply COMPRESSED, compressed request unwrapped`, async () => {
    c.send({ type: "ECHO", meta: { correlationId: "gz-small" }, payload: "tiny" });
    const s = await c.expectReply("gz-small", "small ECHO");
    assert(s.type === "ECHO" && s.payload === "tiny" && !s.__frame.compressed, `small reply: ${show(s)}`);
    const big = "signalbox ".repeat(400); // ~4 KB, above the 1024-byte default threshold
    c.send({ type: "ECHO", meta: { correlationId: "gz-big" }, payload: big });
    const b = await c.expectReply("gz-big", "large ECHO");
    assert(b.type === "ECHO" && b.payload === big, `large reply type ${b.type}`);
    assert(b.__frame.compressed, "large reply should arrive as a COMPRESSED envelope");
    c.sendCompressed({ type: "ECHO", meta: { correlationId: "gz-in" }, payload: { n: 1 } });
    const i = await c.expectReply("gz-in", "ECHO of a compressed request");
    assert(i.type === "ECHO" && isDeepStrictEqual(i.payload, { n: 1 }), show(stripFrame(i)));
  });
  await c.close();
}

async function negotiationChecks() {
  await check("no subprotocol offered -> json", async () => {
    const c = await Client.connect(undefined, { expectProtocol: "" });
    c.send({ type: "ECHO", meta: { correlationId: "noproto" }, payload: { a: 1 } });
    const m = await c.expectReply("noproto", "ECHO reply");
    assert(m.type === "ECHO" && m.__frame && !m.__frame.isBinary, `expected a JSON text frame: ${show(stripFrame(m))}`);
    await c.close();
  });
  await check("several offered -> first known in the client's order", async () => {
    const c = await Client.connect(["x-unknown", "msgpack", "json"], { expectProtocol: "msgpack" });
    await c.close();
  });
  await check("only an unknown subprotocol offered -> upgrade refused with HTTP 400", async () => {
    const status = await new Promise((resolve, reject) => {
      const ws = new WebSocket(URL_, ["x-unknown-codec"], { handshakeTimeout: TIMEOUT });
      ws.once("unexpected-response", (_req, res) => {
        resolve(res.statusCode);
        res.resume();
        ws.terminate();
      });
      ws.once("open", () => {
        ws.terminate();
        reject(new Error(`upgrade accepted (protocol "${ws.protocol}")`));
      });
      ws.once("error", (e) => reject(new Error(`expected HTTP 400, got error: ${e.message}`)));
    });
    assert(status === 400, `HTTP ${status}`);
  });
}

await negotiationChecks();
for (const codec of ["json", "msgpack"]) await codecChecks(codec);
await mixedChecks();
for (const codec of ["json+gzip", "msgpack+gzip"]) await gzipChecks(codec);

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
