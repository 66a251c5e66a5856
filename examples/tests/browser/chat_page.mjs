// Drives the chat example's web page in headless Debian chromium.
//
//   node chat_page.mjs http://127.0.0.1:8080
//   node chat_page.mjs https://localhost:8443 server-cert.pem
//
// Over https, chromium trusts the server's certificate by its public key
// (--ignore-certificate-errors-spki-list: only that key, no blanket "ignore
// certificate errors"), and every WebSocket the pages open must be wss://.
// For each codec (json, msgpack): two pages join room "browser-<codec>", each
// sends a message, and both pages must show both messages; the second joiner
// sees the first one's earlier message (room history) and both names in the
// member list. Then resume: a page whose connection (through a TCP proxy
// here) is reset reconnects by itself and shows every message said while it
// was away, exactly once. Exits 0 on success, 1 with a message on failure.
// Needs /usr/bin/chromium (scripts/setup).
import { chromium } from "playwright-core";
import net from "node:net";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { X509Certificate, createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";

const BASE = process.argv[2];
const TRUST_PEM = process.argv[3];
if (!BASE) {
  console.error("usage: node chat_page.mjs BASE_URL [CERT_PEM]   (e.g. http://127.0.0.1:8080)");
  process.exit(2);
}
const SECURE = new URL(BASE).protocol === "https:";
// The SHA-256 of the certificate's SubjectPublicKeyInfo, base64: the form
// chromium's --ignore-certificate-errors-spki-list takes.
const trustArgs = TRUST_PEM
  ? [`--ignore-certificate-errors-spki-list=${createHash("sha256")
      .update(new X509Certificate(readFileSync(TRUST_PEM)).publicKey.export({ type: "spki", format: "der" }))
      .digest("base64")}`]
  : [];
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const STEP_TIMEOUT = 5_000;
const OVERALL_TIMEOUT = 90_000;
const CODECS = ["json", "msgpack"];

const overall = setTimeout(() => {
  console.error(`FAIL: browser test did not finish within ${OVERALL_TIMEOUT / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT);
overall.unref();

const userDataDir = mkdtempSync(join(tmpdir(), "signalbox-chromium-"));
let context;

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

async function openPage(name, codec, errors, query = "", room = `browser-${codec}`) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on("pageerror", (e) => errors.push(`${name}: page error: ${e.message}`));
  page.on("console", (m) => {
    // Failed loads are reported with their URL by the "response" handler below.
    // The resume scenario resets connections on purpose: their failures are expected there.
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
  await step(`${name}: load ${BASE}/${query}`, () => page.goto(BASE + "/" + query, { waitUntil: "load" }));
  await step(`${name}: msgpack global`, async () =>
    check(await page.evaluate(() => typeof window.MessagePack?.encode === "function"), "window.MessagePack missing (/msgpack.min.js not served?)"));
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

let failed = false;
let passed = 0;
try {
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
  }
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.message}`);
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed ? 1 : 0} failed`);
process.exit(failed ? 1 : 0);
