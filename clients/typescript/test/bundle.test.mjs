// The committed browser bundle (dist/signalbox.browser.js) is what its
// sources build to, and works: a msgpack request through it to the chat.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import WebSocket from "ws";
import { bundle } from "../scripts/bundle.mjs";
import { startChat } from "./helpers.mjs";

const file = new URL("../dist/signalbox.browser.js", import.meta.url);

test("the committed browser bundle matches its sources (npm run bundle)", async () => {
  assert.ok(readFileSync(file, "utf8") === (await bundle()), "dist/signalbox.browser.js is stale: run npm run bundle");
});

test("the browser bundle speaks msgpack to the chat", async () => {
  const { Client, RpcError } = await import(file.href);
  assert.equal(typeof RpcError, "function");
  const chat = await startChat();
  const client = new Client(chat.url, { WebSocket, codecs: ["msgpack+gzip"] });
  try {
    assert.ok(await client.waitConnected());
    assert.equal(client.codec, "msgpack+gzip");
    const payload = { bytes: new Uint8Array([1, 2, 3]), text: "z".repeat(5000) };
    const back = await client.request("ECHO", payload);
    assert.deepEqual([...back.bytes], [1, 2, 3]);
    assert.equal(back.text, payload.text);
    assert.ok(client.stats().compressedReceived >= 1);
  } finally {
    await client.close();
    await chat.stop("SIGTERM");
  }
});
