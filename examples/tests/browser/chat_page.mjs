// Drives the chat example's web page (examples/web/index.html, on the
// TypeScript client's browser bundle, clients/typescript/dist) in headless Debian
// chromium, against the chat binary it starts itself, or against a running
// chat at BASE_URL:
//
//   node chat_page.mjs PATH_TO_CHAT_BINARY
//   node chat_page.mjs http://127.0.0.1:8080
//   node chat_page.mjs https://localhost:8443 server-cert.pem
//
// Over https, chromium trusts the server's certificate by its public key
// (--ignore-certificate-errors-spki-list: only that key, no blanket "ignore
// certificate errors"), and every WebSocket the pages open must be wss://.
//
// For each codec (json, msgpack; the first case also json+gzip and msgpack+gzip):
// - two pages join room "browser-<codec>", each sends a message, and both
//   pages must show both messages; the second joiner sees the first one's
//   earlier message (room history) and both names in the member list; then
//   it switches codec (a new connection) and shows nothing twice;
// - resume: a page whose connection (through a TCP proxy here) is reset
//   reconnects by itself and shows every message said while it was away,
//   exactly once, told that nothing was missed;
// - server restart: a page and a Node member (the same client bundle, with
//   `ws`) talk; sending before joining joins first, without an error. The
//   chat process is killed and started again on the same port; the Node
//   member reconnects first (the page is held off by its proxy) and says
//   something; the page reconnects by itself, shows that it could not
//   recover the old epoch (§8.1 of docs/PROTOCOL.md), shows what the Node
//   member said after the restart exactly once, and the two talk again.
//   This case restarts the server: it runs only with the chat binary.
// These cases load the page with ?transport=websocket (WebSocket only).
// With the chat binary, for json and msgpack:
// - WebTransport: in a second chromium (QUIC allowed, trusting the chat's
//   self-signed certificate only by its SHA-256 from GET /webtransport,
//   serverCertificateHashes), the page connects over WebTransport (it says
//   so, and opens no WebSocket) and talks both ways in one room with a Node
//   member on WebSocket and the Rust chat_client on native QUIC;
// - fallback: the page's WebTransport URL pointed (?wt=) at a UDP port
//   nobody listens on, as when UDP is blocked: it falls back to WebSocket,
//   says so, and talks with the Node member.
// Exits 0 on success, 1 with a message on failure. Needs /usr/bin/chromium
// (scripts/setup); chat_client comes from SIGNALBOX_CHAT_CLIENT_BIN or
// beside the chat binary.
import { chromium } from "playwright-core";
import WebSocket from "ws";
import { spawn } from "node:child_process";
import dgram from "node:dgram";
import net from "node:net";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { X509Certificate, createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { Client } from "../../../clients/typescript/dist/signalbox.browser.js";

const TARGET = process.argv[2];
if (!TARGET) {
  console.error("usage: node chat_page.mjs PATH_TO_CHAT_BINARY | BASE_URL [CERT_PEM]");
  process.exit(2);
}
const URL_GIVEN = /^https?:\/\//.test(TARGET);
const CHAT_BIN = URL_GIVEN ? undefined : TARGET;
let BASE = URL_GIVEN ? TARGET : undefined;
const TRUST_PEM = URL_GIVEN ? process.argv[3] : undefined;
const SECURE = URL_GIVEN && new URL(TARGET).protocol === "https:";
// The SHA-256 of the certificate's SubjectPublicKeyInfo, base64: the form
// chromium's --ignore-certificate-errors-spki-list takes.
const trustArgs = TRUST_PEM
  ? [`--ignore-certificate-errors-spki-list=${createHash("sha256")
      .update(new X509Certificate(readFileSync(TRUST_PEM)).publicKey.export({ type: "spki", format: "der" }))
      .digest("base64")}`]
  : [];
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const STEP_TIMEOUT = 5_000;
const OVERALL_TIMEOUT = 150_000;
const CODECS = ["json", "msgpack"];
// The plain exchange also runs with compressed envelopes (docs/PROTOCOL.md §3).
const GZIP_CODECS = ["json+gzip", "msgpack+gzip"];

const overall = setTimeout(() => {
  console.error(`FAIL: browser test did not finish within ${OVERALL_TIMEOUT / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT);
overall.unref();

const userDataDir = mkdtempSync(join(tmpdir(), "signalbox-chromium-"));
const wtUserDataDir = mkdtempSync(join(tmpdir(), "signalbox-chromium-wt-"));
const certOut = join(tmpdir(), `signalbox-chat-page-cert-${process.pid}.pem`);
let context;
// The chromium of the WebTransport case: QUIC allowed.
let wtContext;

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function step(what, fn) {
  try {
    return await fn();
  } catch (e) {
    throw new Error(`${what}: ${e.message.split("\n")[0]}`);
  }
}

// The chat binary on 127.0.0.1:`port` (0: any), QUIC on any port, its
// certificate written to `certOut`; resolves once it listens.
async function startChat(port = 0) {
  const child = spawn(CHAT_BIN, ["--ws", `127.0.0.1:${port}`, "--quic", "127.0.0.1:0", "--cert-out", certOut], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const first = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${CHAT_BIN} did not start: ${stderr}`)), 20_000);
    createInterface({ input: child.stdout }).once("line", (l) => { clearTimeout(timer); resolve(l); });
    exited.then((code) => { clearTimeout(timer); reject(new Error(`${CHAT_BIN} exited (${code}): ${stderr}`)); });
  });
  const addr = /ws=(\S+)/.exec(first)?.[1];
  const quic = /quic=(\S+)/.exec(first)?.[1];
  check(addr && quic, `unexpected first line of the chat: ${first}`);
  return {
    addr,
    quic,
    port: Number(addr.slice(addr.lastIndexOf(":") + 1)),
    async stop(signal = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

// Polls `pred` until it holds; fails with `what` after `ms`.
async function waitUntil(what, pred, ms = STEP_TIMEOUT) {
  const until = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// A chat member in Node: the page's client bundle over `ws`, joining `roomId`
// at every (re)connect, as an application would.
function nodeMember(url, codec, roomId, username) {
  const client = new Client(url, {
    WebSocket,
    codecs: [codec],
    initialBackoffMs: 50,
    maxBackoffMs: 500,
    onConnected: (ctx) => ctx.send("JOIN_ROOM", { roomId, username }),
  });
  const texts = [];
  const errors = [];
  const left = [];
  client.on("NEW_MESSAGE", (p) => texts.push(p.text));
  client.on("USER_LEFT", (p) => left.push(p.userId));
  client.onError((e) => errors.push(`${e.code}: ${e.message}`));
  return { client, texts, errors, left };
}

// A TCP proxy to the chat whose connections can be reset at once, and which
// resets new ones while `down`.
function startProxy(target) {
  const sockets = new Set();
  const proxy = { down: false, port: 0 };
  const server = net.createServer((client) => {
    if (proxy.down) { client.resetAndDestroy(); return; }
    const upstream = net.connect(target.port, target.hostname);
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => { sockets.delete(client); sockets.delete(upstream); client.destroy(); upstream.destroy(); };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  proxy.cut = () => { for (const s of sockets) s.resetAndDestroy(); sockets.clear(); };
  proxy.close = () => { proxy.cut(); server.close(); };
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => {
    proxy.port = server.address().port;
    resolve(proxy);
  }));
}

// Loads the page; `transport` "websocket" adds ?transport=websocket, "auto" leaves the choice to the page.
async function openPage(name, codec, errors, query = "", room = `browser-${codec}`, { transport = "websocket", ctx = context } = {}) {
  const page = await ctx.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on("pageerror", (e) => errors.push(`${name}: page error: ${e.message}`));
  page.on("console", (m) => {
    // Failed loads are reported with their URL by the "response" handler below.
    // The resume and restart scenarios break connections on purpose: their failures are expected there.
    const expected = query && /WebSocket connection to .* failed/.test(m.text());
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource") && !expected) {
      errors.push(`${name}: console error: ${m.text()}`);
    }
  });
  page.on("websocket", (ws) => {
    if (SECURE && !ws.url().startsWith("wss://")) errors.push(`${name}: page over https opened ${ws.url()}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) errors.push(`${name}: HTTP ${r.status()} for ${r.url()}`);
  });
  const flag = transport === "websocket" ? "transport=websocket" : "";
  const search = [query.replace(/^\?/, ""), flag].filter(Boolean).join("&");
  const path = "/" + (search ? "?" + search : "");
  await step(`${name}: load ${BASE}${path}`, () => page.goto(BASE + path, { waitUntil: "load" }));
  await page.selectOption("#codec", codec);
  await page.fill("#username", `${name}-${codec}`);
  await page.fill("#room", room);
  await step(`${name}: connect with ${codec}`, () =>
    page.waitForFunction(
      (c) => document.querySelector("#status")?.textContent.trim() === "connected" &&
        document.querySelector("#protocol")?.textContent.includes(c),
      codec,
    ));
  return page;
}

// Number of USER_JOINED lines the page shows.
const joinedCount = (page) => page.locator("#messages .joined").count();

async function waitJoined(page, name, n) {
  await step(`${name}: expected ${n} USER_JOINED line(s)`, () =>
    page.waitForFunction((k) => document.querySelectorAll("#messages .joined").length >= k, n));
}

async function waitMessage(page, name, text) {
  await step(`${name}: expected a message "${text}" in #messages`, () =>
    page.locator("#messages .msg", { hasText: text }).first().waitFor({ state: "visible" }));
}

// Lines of `page` in #messages whose text is exactly `text`.
const shownTimes = (page, text) =>
  page.locator("#messages .msg .text", { hasText: new RegExp(`^${text}$`) }).count();

async function runCodec(codec) {
  const errors = [];
  const a = await openPage("A", codec, errors);
  const b = await openPage("B", codec, errors);

  await a.click("#join");
  await waitJoined(a, "A", 1);
  await a.fill("#text", "said before B came");
  await a.click("#send");
  await waitMessage(a, "A", "said before B came");
  await b.click("#join");
  await waitMessage(b, "B", "said before B came"); // the room's history
  await waitJoined(b, "B", 2);          // A's (history) and B's own USER_JOINED
  await waitJoined(a, "A", 2);          // A saw B arrive
  await step("B: member list names A and B", () =>
    b.waitForFunction((names) => {
      const shown = [...document.querySelectorAll("#members li")].map((li) => li.textContent);
      return names.every((n) => shown.includes(n));
    }, [`A-${codec}`, `B-${codec}`]));

  await a.fill("#text", "hello from A");
  await a.click("#send");
  await waitMessage(a, "A", "hello from A");
  await b.fill("#text", "hello from B");
  await b.press("#text", "Enter");      // Enter submits the form too
  for (const [page, name] of [[a, "A"], [b, "B"]]) {
    await waitMessage(page, name, "hello from A");
    await waitMessage(page, name, "hello from B");
  }
  // Names come from USER_JOINED payloads, so B's line on A names B.
  await step(`A: message from B shown with username`, async () =>
    check(await a.locator("#messages .msg", { hasText: "hello from B" }).first().textContent()
      .then((t) => t.includes(`B-${codec}`)), `expected "B-${codec}" in the line`));
  const errLines = await a.locator("#messages .error").allTextContents();
  check(errLines.length === 0, `A: unexpected ERROR lines: ${errLines.join(" | ")}`);
  check(errors.length === 0, errors.join("\n"));

  // B switches codec: a new connection that joins its room again; what the
  // room replays to it is shown already, and is not shown twice.
  const other = codec.startsWith("json") ? codec.replace("json", "msgpack") : codec.replace("msgpack", "json");
  await b.selectOption("#codec", other);
  await step(`B: reconnects with ${other}`, () =>
    b.waitForFunction(
      (c) => document.querySelector("#status")?.dataset.state === "connected" &&
        document.querySelector("#protocol")?.textContent === `(${c})`,
      other,
    ));
  await step("B: joined again on its new connection (A sees it)", () => waitJoined(a, "A", 3));
  await a.fill("#text", `after B switched to ${other}`);
  await a.click("#send");
  await waitMessage(b, "B", `after B switched to ${other}`);
  for (const text of ["said before B came", "hello from A", "hello from B"]) {
    const n = await shownTimes(b, text);
    check(n === 1, `B: "${text}" shown ${n} times after the codec switch, expected once`);
  }

  await a.click("#leave");
  await step("B: expected USER_LEFT after A leaves", () =>
    b.locator("#messages .left").first().waitFor({ state: "visible" }));
  check(await joinedCount(b) >= 1, "B lost its lines");
  await a.close();
  await b.close();
}

async function runResume(codec) {
  const errors = [];
  const room = `resume-${codec}`;
  const base = new URL(BASE);
  const proxy = await startProxy(base);
  const wsScheme = SECURE ? "wss" : "ws";
  const c = await openPage("C", codec, errors, `?ws=${wsScheme}://${base.hostname}:${proxy.port}/ws`, room);
  const d = await openPage("D", codec, errors, "", room);
  await c.click("#join");
  await waitJoined(c, "C", 1);
  await d.click("#join");
  await waitJoined(c, "C", 2);
  await d.fill("#text", "before the cut");
  await d.click("#send");
  await waitMessage(c, "C", "before the cut");

  proxy.down = true;
  proxy.cut();
  await step("C: sees its connection drop", () =>
    c.waitForFunction(() => document.querySelector("#status")?.dataset.state !== "connected"));
  const missed = ["away 1", "away 2", "away 3", "away 4", "away 5"];
  for (const text of missed) {
    await d.fill("#text", text);
    await d.click("#send");
    await waitMessage(d, "D", text);
  }
  proxy.down = false;
  await step("C: reconnects by itself", () =>
    c.waitForFunction(() => document.querySelector("#status")?.dataset.state === "connected", null, { timeout: 15_000 }));
  await step("C: told nothing was missed", () =>
    c.locator("#messages .recovered").first().waitFor({ state: "visible" }));
  for (const text of missed) await waitMessage(c, "C", text);
  await d.fill("#text", "after the cut");
  await d.click("#send");
  await waitMessage(c, "C", "after the cut");
  for (const text of ["before the cut", ...missed, "after the cut"]) {
    const n = await c.locator("#messages .msg .text", { hasText: new RegExp(`^${text}$`) }).count();
    check(n === 1, `C: "${text}" shown ${n} times, expected once`);
  }
  check((await c.locator("#messages .not-recovered").count()) === 0, "C: a room reported not recovered");
  const errLines = await c.locator("#messages .error").allTextContents();
  check(errLines.length === 0, `C: unexpected ERROR lines: ${errLines.join(" | ")}`);
  check(errors.length === 0, errors.join("\n"));
  await c.close();
  await d.close();
  proxy.close();
}

async function runRestart(codec) {
  const errors = [];
  const room = `restart-${codec}`;
  const proxy = await startProxy(new URL(BASE));
  const node = nodeMember(`ws://${chat.addr}/ws`, codec, room, `N-${codec}`);
  try {
    check(await node.client.waitConnected(STEP_TIMEOUT), "N: not connected");
    const e = await openPage("E", codec, errors, `?ws=ws://127.0.0.1:${proxy.port}/ws`, room);
    // Sending before joining joins first: no error, and the message arrives.
    await e.fill("#text", "E speaks before joining");
    await e.click("#send");
    await waitMessage(e, "E", "E speaks before joining");
    await waitUntil("N to get E's first message", () => node.texts.includes("E speaks before joining"));
    await node.client.send("SEND_MESSAGE", { roomId: room, text: "N before the restart" });
    await waitMessage(e, "E", "N before the restart");
    await step("E: member list names E and N", () =>
      e.waitForFunction((names) => {
        const shown = [...document.querySelectorAll("#members li")].map((li) => li.textContent);
        return names.every((n) => shown.includes(n));
      }, [`E-${codec}`, `N-${codec}`]));

    // The chat dies; the page stays away (its proxy refuses) until the Node
    // member is back on the new process and has said what the page must catch up on.
    proxy.down = true;
    await chat.stop("SIGKILL");
    await step("E: sees its connection drop", () =>
      e.waitForFunction(() => document.querySelector("#status")?.dataset.state === "reconnecting"));
    chat = await startChat(chat.port);
    check(await node.client.waitConnected(15_000), `N: not reconnected: ${JSON.stringify(node.client.state)}`);
    const meanwhile = ["N after the restart 1", "N after the restart 2", "N after the restart 3"];
    for (const text of meanwhile) await node.client.send("SEND_MESSAGE", { roomId: room, text });
    await waitUntil("N to get its own messages back after the restart", () => meanwhile.every((t) => node.texts.includes(t)));
    check(await e.locator("#status").getAttribute("data-state") !== "connected", "E reconnected while its proxy refused");
    proxy.down = false;

    await step("E: reconnects by itself", () =>
      e.waitForFunction(() => document.querySelector("#status")?.dataset.state === "connected", null, { timeout: 15_000 }));
    await step("E: told the old room could not be recovered", () =>
      e.locator("#messages .not-recovered").first().waitFor({ state: "visible" }));
    for (const text of meanwhile) await waitMessage(e, "E", text);
    await e.fill("#text", "E is back");
    await e.press("#text", "Enter");
    await waitUntil("N to get E's message after the restart", () => node.texts.includes("E is back"));
    await waitMessage(e, "E", "E is back");
    for (const text of ["E speaks before joining", "N before the restart", ...meanwhile, "E is back"]) {
      const n = await shownTimes(e, text);
      check(n === 1, `E: "${text}" shown ${n} times, expected once`);
    }
    await step("E: member list is E and N on the new process, nobody else", () =>
      e.waitForFunction((names) => {
        const shown = [...document.querySelectorAll("#members li")].map((li) => li.textContent);
        return shown.length === names.length && names.every((n) => shown.includes(n));
      }, [`E-${codec}`, `N-${codec}`]));
    // E's rejoin of the room it could not recover is silent to the others.
    check(node.left.length === 0, `N: saw USER_LEFT of ${node.left.join(", ")}`);
    const errLines = await e.locator("#messages .error").allTextContents();
    check(errLines.length === 0, `E: unexpected error lines: ${errLines.join(" | ")}`);
    check(node.errors.length === 0, `N: errors: ${node.errors.join(" | ")}`);
    check(errors.length === 0, errors.join("\n"));
    await e.close();
  } finally {
    await node.client.close();
    proxy.close();
  }
}

// The Rust client (examples/src/bin/chat_client.rs) on native QUIC as a member of `room`.
async function startQuicMember(codec, room, username) {
  const file = process.env.SIGNALBOX_CHAT_CLIENT_BIN || join(dirname(CHAT_BIN), "chat_client");
  check(existsSync(file), `${file} missing: build it with \`cargo build -p signalbox-examples --bin chat_client\``);
  const child = spawn(file, ["--quic", chat.quic, "--trust", certOut, "--codec", codec, "--room", room, "--username", username], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const texts = [];
  let joined = false;
  createInterface({ input: child.stdout }).on("line", (l) => {
    if (l === "joined") joined = true;
    else texts.push(JSON.parse(l).text);
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  await waitUntil(`the QUIC member to join (${stderr})`, () => joined || child.exitCode !== null, 10_000);
  check(joined, `chat_client --quic exited: ${stderr}`);
  return {
    texts,
    say: (text) => child.stdin.write(`${text}\n`),
    async stop() {
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// The page over WebTransport, a Node member over WebSocket and the Rust client
// over native QUIC in one room: everyone hears everyone.
async function runWebTransport(codec) {
  const errors = [];
  const room = `wt-${codec}`;
  const node = nodeMember(`ws://${chat.addr}/ws`, codec, room, `N-${codec}`);
  let quic;
  try {
    check(await node.client.waitConnected(STEP_TIMEOUT), "N: not connected");
    quic = await startQuicMember(codec, room, `Q-${codec}`);
    const sockets = [];
    const page = await wtContext.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT);
    page.on("websocket", (ws) => sockets.push(ws.url()));
    page.on("pageerror", (e) => errors.push(`W: page error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") errors.push(`W: console error: ${m.text()}`); });
    page.on("response", (r) => {
      if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) errors.push(`W: HTTP ${r.status()} for ${r.url()}`);
    });
    await step("W: load the page", () => page.goto(BASE + "/", { waitUntil: "load" }));
    check(await page.evaluate(() => typeof WebTransport === "function"), "W: this chromium has no WebTransport");
    await page.selectOption("#codec", codec);
    await page.fill("#username", `W-${codec}`);
    await page.fill("#room", room);
    await step(`W: connected over WebTransport with ${codec}`, () =>
      page.waitForFunction(
        (c) => document.querySelector("#status")?.dataset.state === "connected" &&
          document.querySelector("#transport")?.textContent === "over WebTransport" &&
          document.querySelector("#protocol")?.textContent === `(${c})`,
        codec,
        { timeout: 15_000 },
      )).catch(async (e) => {
        const why = await page.locator("#transport").getAttribute("title").catch(() => "");
        const shown = await page.locator(".status").textContent().catch(() => "");
        throw new Error(`${e.message} (page shows "${shown?.replace(/\s+/g, " ").trim()}"; ${why || "no WebTransport error"})`);
      });
    const status = (await page.locator(".status").textContent()).replace(/\s+/g, " ");
    check(status.includes(`connected over WebTransport (${codec})`), `W: status reads "${status}"`);
    await page.click("#join");
    await waitJoined(page, "W", 1);
    await step("W: member list names W, N and Q", () =>
      page.waitForFunction((names) => {
        const shown = [...document.querySelectorAll("#members li")].map((li) => li.textContent);
        return names.every((n) => shown.includes(n));
      }, [`W-${codec}`, `N-${codec}`, `Q-${codec}`]));

    // Page -> WebSocket and QUIC members.
    await page.fill("#text", `W over WebTransport (${codec})`);
    await page.press("#text", "Enter");
    await waitMessage(page, "W", `W over WebTransport (${codec})`);
    await waitUntil("N (WebSocket) to get W's message", () => node.texts.includes(`W over WebTransport (${codec})`));
    await waitUntil("Q (QUIC) to get W's message", () => quic.texts.includes(`W over WebTransport (${codec})`));
    // WebSocket and QUIC members -> page.
    await node.client.send("SEND_MESSAGE", { roomId: room, text: `N over WebSocket (${codec})` });
    quic.say(`Q over QUIC (${codec})`);
    await waitMessage(page, "W", `N over WebSocket (${codec})`);
    await waitMessage(page, "W", `Q over QUIC (${codec})`);
    await waitUntil("Q to get N's message", () => quic.texts.includes(`N over WebSocket (${codec})`));
    await waitUntil("N to get Q's message", () => node.texts.includes(`Q over QUIC (${codec})`));
    // A burst from the page arrives whole and in order on both.
    const burst = Array.from({ length: 20 }, (_, i) => `W burst ${i} ${"x".repeat(i * 50)}`);
    await page.evaluate((texts) => {
      for (const text of texts) {
        document.querySelector("#text").value = text;
        document.querySelector("#send").click();
      }
    }, burst);
    const inOrder = (seen) => burst.every((t) => seen.includes(t)) &&
      burst.map((t) => seen.indexOf(t)).every((v, i, a) => i === 0 || v > a[i - 1]);
    await waitUntil("N to get W's burst in order", () => inOrder(node.texts));
    await waitUntil("Q to get W's burst in order", () => inOrder(quic.texts));
    for (const text of [`W over WebTransport (${codec})`, `N over WebSocket (${codec})`, `Q over QUIC (${codec})`]) {
      const n = await shownTimes(page, text.replace(/[()]/g, "\\$&"));
      check(n === 1, `W: "${text}" shown ${n} times, expected once`);
    }
    check(sockets.length === 0, `W: the page opened WebSockets: ${sockets.join(", ")}`);
    const errLines = await page.locator("#messages .error").allTextContents();
    check(errLines.length === 0, `W: unexpected error lines: ${errLines.join(" | ")}`);
    check(node.errors.length === 0, `N: errors: ${node.errors.join(" | ")}`);
    check(errors.length === 0, errors.join("\n"));
    await page.close();
  } finally {
    await node.client.close();
    await quic?.stop();
  }
}

// A UDP port nobody listens on (bound, then released).
function closedUdpPort() {
  return new Promise((resolve) => {
    const socket = dgram.createSocket("udp4");
    socket.bind(0, "127.0.0.1", () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

// The page in the chromium with WebTransport, its WebTransport URL pointed
// (?wt=) at a UDP port nobody listens on, as when UDP is blocked: the
// attempt fails and the same attempt goes on over WebSocket.
async function runFallback(codec) {
  const errors = [];
  const room = `fallback-${codec}`;
  const node = nodeMember(`ws://${chat.addr}/ws`, codec, room, `N-${codec}`);
  try {
    check(await node.client.waitConnected(STEP_TIMEOUT), "N: not connected");
    const page = await wtContext.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT);
    page.on("pageerror", (e) => errors.push(`F: page error: ${e.message}`));
    const wt = `https://127.0.0.1:${await closedUdpPort()}/wt`;
    await step("F: load the page", () => page.goto(`${BASE}/?wt=${encodeURIComponent(wt)}`, { waitUntil: "load" }));
    await page.selectOption("#codec", codec);
    await page.fill("#username", `F-${codec}`);
    await page.fill("#room", room);
    await step("F: connected over WebSocket after WebTransport failed", () =>
      page.waitForFunction(
        (c) => document.querySelector("#status")?.dataset.state === "connected" &&
          document.querySelector("#transport")?.textContent === "over WebSocket" &&
          document.querySelector("#protocol")?.textContent === `(${c})`,
        codec,
        { timeout: 15_000 },
      ));
    const why = await page.locator("#transport").getAttribute("title");
    check(why?.startsWith("WebTransport failed"), `F: no WebTransport failure shown (title ${JSON.stringify(why)})`);
    await page.click("#join");
    await waitJoined(page, "F", 1);
    await page.fill("#text", "F after the fallback");
    await page.press("#text", "Enter");
    await waitUntil("N to get F's message", () => node.texts.includes("F after the fallback"));
    await node.client.send("SEND_MESSAGE", { roomId: room, text: "N to F" });
    await waitMessage(page, "F", "N to F");
    check(errors.length === 0, errors.join("\n"));
    await page.close();
  } finally {
    await node.client.close();
  }
}

if (!CHAT_BIN) console.log("# the server restart, WebTransport and fallback cases need the chat binary (node chat_page.mjs PATH_TO_CHAT_BINARY): not run against a BASE_URL");
let failed = false;
let passed = 0;
let chat;
try {
  if (CHAT_BIN) {
    chat = await startChat();
    BASE = `http://${chat.addr}`;
  }
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ...trustArgs,
    ],
    timeout: 15_000,
  });
  for (const codec of CODECS) {
    await runCodec(codec);
    console.log(`ok - browser chat page, codec ${codec}`);
    passed++;
    await runResume(codec);
    console.log(`ok - browser chat page resumes after a reset, codec ${codec}`);
    passed++;
    if (chat) {
      await runRestart(codec);
      console.log(`ok - browser chat page recovers from a server restart, talking with a Node member, codec ${codec}`);
      passed++;
    }
  }
  for (const codec of GZIP_CODECS) {
    await runCodec(codec);
    console.log(`ok - browser chat page, codec ${codec}`);
    passed++;
  }
  if (chat) {
    wtContext = await chromium.launchPersistentContext(wtUserDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ],
      timeout: 15_000,
    });
    for (const codec of CODECS) {
      await runWebTransport(codec);
      console.log(`ok - browser chat page over WebTransport talks with WebSocket and native QUIC members, codec ${codec}`);
      passed++;
    }
    await runFallback("json");
    console.log("ok - browser chat page falls back to WebSocket when WebTransport cannot connect");
    passed++;
  }
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.message}`);
} finally {
  await context?.close().catch(() => {});
  await wtContext?.close().catch(() => {});
  await chat?.stop("SIGTERM").catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  rmSync(wtUserDataDir, { recursive: true, force: true });
  rmSync(certOut, { force: true });
}
console.log(`${passed} passed, ${failed ? 1 : 0} failed`);
process.exit(failed ? 1 : 0);
