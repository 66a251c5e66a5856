// Drives the chat example's web page in headless Debian chromium.
//
//   node chat_page.mjs http://127.0.0.1:8080
//
// For each codec (json, msgpack): two pages join room "browser-<codec>", each
// sends a message, and both pages must show both messages. Exits 0 on success,
// 1 with a message on failure. Needs /usr/bin/chromium (scripts/setup).
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const BASE = process.argv[2];
if (!BASE) {
  console.error("usage: node chat_page.mjs BASE_URL   (e.g. http://127.0.0.1:8080)");
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const STEP_TIMEOUT = 5_000;
const OVERALL_TIMEOUT = 30_000;
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

async function openPage(name, codec, errors) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on("pageerror", (e) => errors.push(`${name}: page error: ${e.message}`));
  page.on("console", (m) => {
    // Failed loads are reported with their URL by the "response" handler below.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      errors.push(`${name}: console error: ${m.text()}`);
    }
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) errors.push(`${name}: HTTP ${r.status()} for ${r.url()}`);
  });
  await step(`${name}: load ${BASE}/`, () => page.goto(BASE + "/", { waitUntil: "load" }));
  await step(`${name}: msgpack global`, async () =>
    check(await page.evaluate(() => typeof window.MessagePack?.encode === "function"), "window.MessagePack missing (/msgpack.min.js not served?)"));
  await page.selectOption("#codec", codec);
  await page.fill("#username", `${name}-${codec}`);
  await page.fill("#room", `browser-${codec}`);
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
  await b.click("#join");
  await waitJoined(b, "B", 1);          // B's own USER_JOINED: B is a member now
  await waitJoined(a, "A", 2);          // A saw B arrive

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

let failed = false;
let passed = 0;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    timeout: 15_000,
  });
  for (const codec of CODECS) {
    await runCodec(codec);
    console.log(`ok - browser chat page, codec ${codec}`);
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
