// Shared by the tests: the real example binaries as child processes, a TCP
// proxy that can cut or freeze connections, and small waiting helpers.
//
// Binaries come from SIGNALBOX_CHAT_BIN, SIGNALBOX_CHAT_CLIENT_BIN and
// SIGNALBOX_GUIDE_PERFORMANCE_BIN (the Rust integration test
// examples/tests/typescript_client.rs sets them), else from
// $CARGO_TARGET_DIR/debug or the repository's target/debug. A missing
// binary fails the test with the command that builds it.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { Client } from "../dist/index.js";
import { chatReplyTypes } from "../dist/generated/chat.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..", "..", "..");

/** The path of example binary `name`, or a failure saying how to build it. */
export function binary(name, envVar) {
  const fromEnv = process.env[envVar];
  const target = process.env.CARGO_TARGET_DIR ?? path.join(repo, "target");
  const file = fromEnv ?? path.join(target, "debug", name);
  if (!existsSync(file)) {
    throw new Error(
      `${file} missing: build it with \`cargo build -p signalbox-examples --bin ${name}\` or set ${envVar}`,
    );
  }
  return file;
}

/** Waits for `pred()` to hold, polling; fails after `ms` with `what`. */
export async function waitFor(what, pred, ms = 10_000) {
  const until = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts a server binary; resolves once it printed `listening ws=ADDR ...`. */
async function startServer(file, args) {
  const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${file} did not start: ${stderr}`)), 20_000);
    lines.once("line", (line) => {
      clearTimeout(timer);
      resolve(line);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${file} exited (${code}): ${stderr}`));
    });
  });
  const ws = /ws=(\S+)/.exec(first)?.[1];
  if (ws === undefined) throw new Error(`unexpected first line ${JSON.stringify(first)}`);
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return {
    child,
    addr: ws,
    port: Number(ws.slice(ws.lastIndexOf(":") + 1)),
    url: `ws://${ws}/ws`,
    /** Ends the server with SIGKILL (no close frames) or SIGTERM (1001). */
    async stop(signal = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** The chat binary on `port` (0: an ephemeral one). */
export function startChat(port = 0, extra = []) {
  return startServer(binary("chat", "SIGNALBOX_CHAT_BIN"), [
    "--ws",
    `127.0.0.1:${port}`,
    "--quic",
    "127.0.0.1:0",
    ...extra,
  ]);
}

/** The guide's performance program (rpc routes `REPORT` / `RAW_REPORT`). */
export function startGuidePerformance() {
  return startServer(binary("guide_performance", "SIGNALBOX_GUIDE_PERFORMANCE_BIN"), [
    "--ws",
    "127.0.0.1:0",
  ]);
}

/** A TypeScript chat client (typed by the generated chat messages). */
export function chatClient(url, options = {}) {
  return new Client(url, {
    WebSocket,
    replyTypes: chatReplyTypes,
    initialBackoffMs: 50,
    maxBackoffMs: 500,
    ...options,
  });
}

/** An untyped client. */
export function anyClient(url, options = {}) {
  return new Client(url, { WebSocket, initialBackoffMs: 50, maxBackoffMs: 500, ...options });
}

/** Collects the NEW_MESSAGE texts a client receives. */
export function texts(client) {
  const seen = [];
  client.on("NEW_MESSAGE", (m) => seen.push(m.text));
  return seen;
}

/** The topic of a chat room (examples/src/chat.rs, `room_topic`). */
export function roomTopic(roomId) {
  let topic = "room:";
  for (const b of new TextEncoder().encode(roomId)) {
    const c = String.fromCharCode(b);
    topic += /[A-Za-z0-9._-]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return topic;
}

/** Joins `roomId` and waits until the room's `$sb:subscribed` came. */
export async function join(client, roomId, username) {
  await client.send("JOIN_ROOM", username === undefined ? { roomId } : { roomId, username });
  await waitFor(`${roomId} subscribed`, () => client.positions().has(roomTopic(roomId)));
}

/**
 * A TCP proxy in front of `target` ("host:port"). `cut()` resets every
 * connection; `refuse(true)` resets new ones as they come; `freeze()` stops
 * forwarding without closing anything (a peer gone silent).
 */
export async function startProxy(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const pairs = new Set();
  let refusing = false;
  let frozen = false;
  const server = net.createServer((downstream) => {
    if (refusing) {
      downstream.resetAndDestroy();
      return;
    }
    const upstream = net.connect(port, host);
    const pair = { downstream, upstream };
    pairs.add(pair);
    const forward = (from, to) =>
      from.on("data", (d) => {
        if (!frozen) to.write(d);
      });
    forward(downstream, upstream);
    forward(upstream, downstream);
    const end = () => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = `127.0.0.1:${server.address().port}`;
  return {
    addr,
    url: `ws://${addr}/ws`,
    get connections() {
      return pairs.size;
    },
    cut() {
      for (const { downstream, upstream } of pairs) {
        downstream.resetAndDestroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    refuse(on) {
      refusing = on;
    },
    freeze(on = true) {
      frozen = on;
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** The Rust client (examples/src/bin/chat_client.rs) as a chat member of `room`. */
export async function startRustMember(url, codec, room, username) {
  const file = binary("chat_client", "SIGNALBOX_CHAT_CLIENT_BIN");
  const child = spawn(file, ["--url", url, "--codec", codec, "--room", room, "--username", username], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const received = [];
  let joined = false;
  createInterface({ input: child.stdout }).on("line", (line) => {
    if (line === "joined") joined = true;
    else received.push(JSON.parse(line));
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  await waitFor(`the Rust member joined (${stderr})`, () => joined || child.exitCode !== null);
  if (!joined) throw new Error(`chat_client exited: ${stderr}`);
  return {
    received,
    say(text) {
      child.stdin.write(`${text}\n`);
    },
    async stop() {
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
