// The README's quick start, type-checked (imports by path instead of the package name).

import { Client } from "../../src/index.js";
import { type ChatMessages, chatReplyTypes } from "../../src/generated/chat.js";
import WebSocket from "ws"; // Node only; browsers have WebSocket

const client = new Client<ChatMessages>("ws://127.0.0.1:8080/ws", {
  WebSocket, codecs: ["msgpack+gzip", "json"], replyTypes: chatReplyTypes,
  onConnected: (c) => c.send("JOIN_ROOM", { roomId: "lobby", username: "ada" }),
});
client.on("NEW_MESSAGE", (m) => console.log(`${m.userId}: ${m.text}`));
await client.send("SEND_MESSAGE", { roomId: "lobby", text: "hello" });
console.log(await client.request("ECHO", { ping: 1 }, { timeout: 5_000 }));
