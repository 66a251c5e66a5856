// Decode throughput in Node: chat NEW_MESSAGE envelopes as the server sends
// them (meta with timestamp, clientId and a topic position), decoded and
// checked by the client's codecs. Prints messages/s per codec (best of 5 runs).
//
//   npm run bench

import { codecByName } from "../dist/index.js";

const N = 200_000;
const RUNS = 5;

function envelope(i) {
  return {
    type: "NEW_MESSAGE",
    meta: { timestamp: 1764160000000 + i, clientId: "3f2a9c1e-17", topic: "room:lobby", offset: i + 1, epoch: "0a1b2c3d4e5f" },
    payload: { roomId: "lobby", userId: "3f2a9c1e-17", text: `message number ${i}: the quick brown fox`, timestamp: 1764160000000 + i },
  };
}

for (const name of ["json", "msgpack"]) {
  const codec = codecByName(name);
  const frames = Array.from({ length: N }, (_, i) => codec.encode(envelope(i)));
  const bytes = frames.reduce((sum, f) => sum + (typeof f === "string" ? Buffer.byteLength(f) : f.length), 0);
  let best = 0;
  let sink = 0;
  for (let run = 0; run < RUNS; run++) {
    const started = process.hrtime.bigint();
    for (const frame of frames) sink += codec.decode(frame).meta.offset;
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    best = Math.max(best, N / seconds);
  }
  if (sink === 0) throw new Error("nothing decoded");
  console.log(
    `${name}: ${Math.round(best).toLocaleString("en-US")} msgs/s decoded (${N} envelopes of ${Math.round(bytes / N)} bytes, best of ${RUNS}, node ${process.version})`,
  );
}
