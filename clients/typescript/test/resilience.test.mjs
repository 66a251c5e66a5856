// What survives a lost connection: reconnects after a server restart,
// resume without loss (docs/PROTOCOL.md §8.1) through a proxy that cuts
// connections, the bounded offline queue, withdrawn requests, heartbeats
// (§4), presence (§8.2).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { DisconnectedError, QueueFullError, TimeoutError } from "../dist/index.js";
import {
  anyClient,
  chatClient,
  join,
  roomTopic,
  sleep,
  startChat,
  startProxy,
  texts,
  waitFor,
} from "./helpers.mjs";

/** Waits until `client` lost its connection and is trying again. */
function lost(client) {
  return waitFor("the connection lost", () => client.state.state === "reconnecting");
}

describe("restart", () => {
  test("the server killed and restarted on the same port: the client reconnects by itself", async () => {
    let chat = await startChat();
    const port = chat.port;
    const states = [];
    const recoveries = [];
    const a = chatClient(chat.url);
    a.onState((s) => states.push(s));
    a.onRecovery((r) => recoveries.push(r));
    const seen = texts(a);
    try {
      await join(a, "restart", "a");
      await a.send("SEND_MESSAGE", { roomId: "restart", text: "before" });
      await waitFor("before", () => seen.includes("before"));

      await chat.stop("SIGKILL");
      await lost(a);
      // Sent while the server is down: waits in the offline queue.
      await a.send("SEND_MESSAGE", { roomId: "restart", text: "while down" });
      assert.equal(a.stats().queuedOffline, 1);
      await sleep(300);
      chat = await startChat(port);

      assert.ok(await a.waitConnected(15_000), JSON.stringify(a.state));
      const reconnected = states.find((s) => s.state === "connected" && s.reconnect);
      assert.ok(reconnected, JSON.stringify(states));
      const reconnecting = states.filter((s) => s.state === "reconnecting");
      assert.ok(reconnecting.length >= 1);
      assert.equal(reconnecting[0].attempt, 1);
      // A new process has a new epoch: the room is restored, but nothing could be replayed.
      await waitFor("the recovery report", () => recoveries.length === 1);
      assert.equal(recoveries[0].topic, roomTopic("restart"));
      assert.equal(recoveries[0].recovered, false);
      // The resume went first, so the queued message found the sender a member again.
      await waitFor("the message sent while down", () => seen.includes("while down"));

      // And a newcomer to the restarted server reaches it.
      const b = chatClient(chat.url);
      try {
        await join(b, "restart", "b");
        await b.send("SEND_MESSAGE", { roomId: "restart", text: "from b" });
        await waitFor("b's message at a", () => seen.includes("from b"));
      } finally {
        await b.close();
      }
    } finally {
      await a.close();
      await chat.stop("SIGTERM");
    }
  });

  test("a graceful shutdown shows its close code and reason", async () => {
    const chat = await startChat();
    const a = anyClient(chat.url, { reconnect: false });
    try {
      assert.ok(await a.waitConnected());
      await chat.stop("SIGTERM");
      await waitFor("closed", () => a.state.state === "closed");
      assert.equal(a.state.code, 1001);
      assert.notEqual(a.state.reason, "");
    } finally {
      await a.close();
    }
  });
});

describe("through a proxy", () => {
  let chat;
  let proxy;
  before(async () => {
    chat = await startChat(0, ["--presence-events"]);
  });
  after(async () => {
    await chat?.stop("SIGTERM");
  });

  async function pair(room, options = {}) {
    proxy = await startProxy(chat.addr);
    const a = chatClient(proxy.url, options);
    const b = chatClient(chat.url);
    await join(a, room, "a");
    await join(b, room, "b");
    return { a, b };
  }

  async function done(...clients) {
    for (const c of clients) await c.close();
    await proxy.close();
  }

  for (const codec of ["json", "msgpack"]) {
    test(`a connection cut mid-stream is resumed without loss (${codec})`, async () => {
      const room = `resume-${codec}`;
      const { a, b } = await pair(room, { codecs: [codec] });
      const seen = texts(a);
      const recoveries = [];
      a.onRecovery((r) => recoveries.push(r));
      const total = 400;
      try {
        const sending = (async () => {
          for (let n = 1; n <= total; n++) {
            await b.send("SEND_MESSAGE", { roomId: room, text: String(n) });
            if (n % 20 === 0) await sleep(5);
          }
        })();
        await waitFor("a part of the stream", () => seen.length >= 100);
        proxy.cut();
        assert.ok(seen.length < total, "the cut must fall mid-stream");
        await sending;
        await waitFor("every message", () => seen.length >= total, 20_000);
        await sleep(200);
        assert.equal(a.stats().connections, 2, "one reconnect");
        assert.deepEqual(
          seen,
          Array.from({ length: total }, (_, i) => String(i + 1)),
          "every message once and in order",
        );
        assert.equal(recoveries.length, 1);
        assert.equal(recoveries[0].topic, roomTopic(room));
        assert.equal(recoveries[0].recovered, true);
      } finally {
        await done(a, b);
      }
    });
  }

  const policies = [
    // capacity 3, five sends while offline
    ["drop-oldest", ["3", "4", "5"], 2],
    ["drop-newest", ["1", "2", "3"], 2],
    ["reject", ["1", "2", "3"], 2],
  ];
  for (const [policy, delivered, dropped] of policies) {
    test(`a full offline queue (${policy})`, async () => {
      const room = `offline-${policy}`;
      const { a, b } = await pair(room, { offlineQueue: 3, offlinePolicy: policy });
      const seenByB = texts(b);
      try {
        proxy.refuse(true);
        proxy.cut();
        await lost(a);
        const outcomes = [];
        for (let n = 1; n <= 5; n++) {
          outcomes.push(
            await a.send("SEND_MESSAGE", { roomId: room, text: String(n) }).then(
              () => "ok",
              (e) => e,
            ),
          );
        }
        if (policy === "reject") {
          assert.deepEqual(outcomes.slice(0, 3), ["ok", "ok", "ok"]);
          assert.ok(outcomes[3] instanceof QueueFullError);
          assert.ok(outcomes[4] instanceof QueueFullError);
        } else {
          assert.deepEqual(outcomes, ["ok", "ok", "ok", "ok", "ok"]);
        }
        assert.equal(a.stats().queuedOffline, 3);
        assert.equal(a.stats().droppedOffline, dropped);
        proxy.refuse(false);
        assert.ok(await a.waitConnected(10_000));
        await a.send("SEND_MESSAGE", { roomId: room, text: "last" });
        await waitFor("the last message at b", () => seenByB.includes("last"));
        assert.deepEqual(seenByB, [...delivered, "last"]);
      } finally {
        await done(a, b);
      }
    });
  }

  test("a request that timed out offline is withdrawn and never sent; one in flight fails as disconnected", async () => {
    const room = "withdrawn";
    const { a, b } = await pair(room);
    const seenByB = texts(b);
    try {
      // Written, then the connection is cut: DisconnectedError.
      const inFlight = a.request("ECHO", "slow?", { timeout: 10_000 });
      const joinRequest = anyClientRequest(a, room);
      proxy.cut();
      const lostReply = await joinRequest.catch((e) => e);
      assert.ok(lostReply instanceof DisconnectedError, String(lostReply));
      // The ECHO may have been answered before the cut, or lost with it.
      const echo = await inFlight.catch((e) => e);
      assert.ok(echo === "slow?" || echo instanceof DisconnectedError, String(echo));
      assert.ok(await a.waitConnected(10_000));

      proxy.refuse(true);
      proxy.cut();
      await lost(a);
      const err = await anyClientRequest(a, room, "withdrawn", 200).catch((e) => e);
      assert.ok(err instanceof TimeoutError, String(err));
      assert.equal(err.sent, false);
      assert.equal(a.stats().queuedOffline, 0);
      proxy.refuse(false);
      assert.ok(await a.waitConnected(10_000));
      await a.send("SEND_MESSAGE", { roomId: room, text: "after" });
      await waitFor("after", () => seenByB.includes("after"));
      assert.ok(!seenByB.includes("withdrawn"), JSON.stringify(seenByB));
    } finally {
      await done(a, b);
    }
  });

  test("heartbeats are answered; a connection gone silent is dropped and replaced", async () => {
    proxy = await startProxy(chat.addr);
    const a = anyClient(proxy.url, { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 1000 });
    const reasons = [];
    a.onState((s) => s.state === "reconnecting" && reasons.push(s.reason));
    try {
      assert.ok(await a.waitConnected());
      await waitFor("heartbeat acks", () => a.stats().heartbeatAcks >= 3);
      proxy.freeze(true);
      const before = a.stats().connections;
      await waitFor("the silent connection dropped", () => reasons.length >= 1, 10_000);
      assert.match(reasons.at(-1), /nothing heard within 1000 ms/);
      proxy.freeze(false);
      assert.ok(await a.waitConnected(10_000));
      const acks = a.stats().heartbeatAcks;
      await waitFor("acks on the new connection", () => a.stats().heartbeatAcks > acks);
      assert.equal(a.stats().connections, before + 1);
    } finally {
      await done(a);
    }
  });

  test("presence: the member list follows $sb:join and $sb:leave", async () => {
    const room = "presence";
    const topic = roomTopic(room);
    const a = chatClient(chat.url);
    const events = [];
    a.onPresence((e) => events.push(e));
    // The chat lists the room's members in ROOM_MEMBERS; the events keep the list current.
    a.on("ROOM_MEMBERS", (m) =>
      a.setMembers(
        topic,
        m.members.map((x) => ({ clientId: x.userId, info: { username: x.username ?? null } })),
      ),
    );
    const b = chatClient(chat.url);
    try {
      await join(a, room, "ada");
      await waitFor("a's own join", () => a.members(topic).length === 1);
      const aId = a.members(topic)[0].clientId;
      await join(b, room, "bob");
      await waitFor("bob's join", () => a.members(topic).length === 2);
      const bob = a.members(topic).find((m) => m.clientId !== aId);
      assert.deepEqual(bob.info, { username: "bob" });
      assert.ok(events.some((e) => e.kind === "join" && e.clientId === bob.clientId));
      await b.close();
      await waitFor("bob's leave", () => a.members(topic).length === 1);
      assert.equal(a.members(topic)[0].clientId, aId);
      const leave = events.find((e) => e.kind === "leave");
      assert.equal(leave.clientId, bob.clientId);
      assert.equal(leave.topic, topic);
    } finally {
      await a.close();
      await b.close();
    }
  });
});

/** A request on a route that never replies (JOIN_ROOM), or a SEND_MESSAGE as a request. */
function anyClientRequest(client, room, text, timeout = 10_000) {
  return text === undefined
    ? client.request("JOIN_ROOM", { roomId: room }, { timeout })
    : client.request("SEND_MESSAGE", { roomId: room, text }, { timeout });
}
