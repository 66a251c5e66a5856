// Type-level test, run by `tsc -p test/types` (npm test runs it): each
// `@ts-expect-error` line must fail to compile, or tsc fails on the unused
// directive; every other line must compile.

import WebSocket from "ws";
import { Client, RpcError, type ServerError } from "../../src/index.js";
import { type ChatMessages, chatReplyTypes } from "../../src/generated/chat.js";

// Node's `ws` and the browser's WebSocket both fit the client.
const client = new Client<ChatMessages>("ws://127.0.0.1:1/ws", {
  WebSocket,
  codecs: ["msgpack", "json"],
  replyTypes: chatReplyTypes,
});
declare const browserWebSocket: typeof globalThis.WebSocket;
new Client<ChatMessages>("ws://127.0.0.1:1/ws", { WebSocket: browserWebSocket });

// Correct payloads compile.
void client.send("JOIN_ROOM", { roomId: "lobby", username: "ada" });
void client.send("JOIN_ROOM", { roomId: "lobby" });
void client.send("SEND_MESSAGE", { roomId: "lobby", text: "hi" });
void client.send("ECHO");
client.on("NEW_MESSAGE", (m) => {
  const text: string = m.text;
  const at: number = m.timestamp;
  void text;
  void at;
});
client.on("ROOM_MEMBERS", (m) => m.members.map((member) => member.userId));
const echoed: Promise<unknown> = client.request("ECHO", { any: ["thing"] });
void echoed;
client.onError((e: ServerError) => e instanceof RpcError && e.code === "DEADLINE_EXCEEDED");

// @ts-expect-error: SEND_MESSAGE needs text
void client.send("SEND_MESSAGE", { roomId: "lobby" });
// @ts-expect-error: text is a string
void client.send("SEND_MESSAGE", { roomId: "lobby", text: 42 });
// @ts-expect-error: roomId, not room
void client.send("JOIN_ROOM", { room: "lobby" });
// @ts-expect-error: JOIN_ROOM has a payload
void client.send("JOIN_ROOM");
// @ts-expect-error: NEW_MESSAGE is sent by the server, not the client
void client.send("NEW_MESSAGE", { roomId: "lobby", userId: "u", text: "t", timestamp: 1 });
// @ts-expect-error: no such type
void client.send("SHOUT", { roomId: "lobby" });
// @ts-expect-error: SEND_MESSAGE is not a request
void client.request("SEND_MESSAGE", { roomId: "lobby", text: "hi" });
client.on("NEW_MESSAGE", (m) => {
  // @ts-expect-error: NEW_MESSAGE has no username
  void m.username;
});
// @ts-expect-error: JOIN_ROOM is not sent by the server
client.on("JOIN_ROOM", () => undefined);
// @ts-expect-error: not a codec
new Client<ChatMessages>("ws://127.0.0.1:1/ws", { WebSocket, codecs: ["cbor"] });

// A map with a typed reply: request("ADD") resolves with SUM's payload.
type Adder = {
  send: { ADD: { a: number; b: number } };
  receive: { SUM: { sum: number } };
  requests: { ADD: "SUM" };
};
const adder = new Client<Adder>("ws://127.0.0.1:1/ws", { WebSocket, replyTypes: { ADD: "SUM" } });
void adder.request("ADD", { a: 1, b: 2 }).then((reply) => {
  const sum: number = reply.sum;
  // @ts-expect-error: SUM has no total
  void reply.total;
  return sum;
});
// @ts-expect-error: b is missing
void adder.request("ADD", { a: 1 });
