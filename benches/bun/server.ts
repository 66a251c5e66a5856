// The ws-kit on Bun baseline: the chat protocol of docs/PROTOCOL.md §9 (JOIN_ROOM,
// USER_JOINED, SEND_MESSAGE, NEW_MESSAGE, LEAVE_ROOM, USER_LEFT, ECHO with
// correlationId) plus the bench-only BENCH_SUBSCRIBE (a silent join, see
// benches/src/proto.rs), served with @ws-kit/bun and Bun's native publish.
//
//   bun server.ts [PORT]     (0 or none: any free port)
//
// Prints `listening ws=127.0.0.1:PORT` once ready; WebSocket at /ws.
import { createBunHandler, bunPubSub } from "@ws-kit/bun";
import { createRouter, message, rpc, withZod, z } from "@ws-kit/zod";
import { withPubSub } from "@ws-kit/pubsub";

const roomId = z.string().min(1).max(128);
const JoinRoom = message("JOIN_ROOM", { roomId, username: z.string().optional() });
const UserJoined = message("USER_JOINED", {
  roomId: z.string(),
  userId: z.string(),
  username: z.string().optional(),
});
const SendMessage = message("SEND_MESSAGE", { roomId, text: z.string().min(1).max(4096) });
const NewMessage = message("NEW_MESSAGE", {
  roomId: z.string(),
  userId: z.string(),
  text: z.string(),
  timestamp: z.number(),
});
const LeaveRoom = message("LEAVE_ROOM", { roomId });
const UserLeft = message("USER_LEFT", { roomId: z.string(), userId: z.string() });
const Echo = rpc("ECHO", { data: z.string() }, "ECHO", { data: z.string() });
const BenchSubscribe = rpc("BENCH_SUBSCRIBE", { roomId }, "BENCH_SUBSCRIBED", { roomId });

type Data = { clientId: string; rooms?: Set<string> };

// Bun.serve needs the handlers, the pub/sub adapter needs the server: start
// with placeholders, then reload with the router's handlers.
const port = Number(process.argv[2] ?? 0);
const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch: () => new Response("starting", { status: 503 }),
  websocket: { message() {} },
});

const router = createRouter<Data>()
  .plugin(withZod())
  .plugin(withPubSub({ adapter: bunPubSub(server) }));

const topic = (room: string) => `room:${room}`;

// ws-kit 0.10's bunPubSub adapter makes ctx.topics.subscribe a no-op ("Bun
// handles per-connection"), yet nothing calls Bun's ws.subscribe, so nobody
// would receive a publish: subscribe the Bun socket as well.
type Sock = { subscribe(t: string): void; unsubscribe(t: string): void };
const join = async (ctx: { ws: unknown; topics: { subscribe(t: string): Promise<void> } }, t: string) => {
  await ctx.topics.subscribe(t);
  (ctx.ws as Sock).subscribe(t);
};
const leave = async (ctx: { ws: unknown; topics: { unsubscribe(t: string): Promise<void> } }, t: string) => {
  await ctx.topics.unsubscribe(t);
  (ctx.ws as Sock).unsubscribe(t);
};
const roomsOf = (ctx: { data: Data; assignData: (d: Partial<Data>) => void }) => {
  if (!ctx.data.rooms) ctx.assignData({ rooms: new Set() });
  return ctx.data.rooms!;
};

router.on(JoinRoom, async (ctx) => {
  const { roomId, username } = ctx.payload;
  const rooms = roomsOf(ctx);
  if (rooms.has(roomId)) return;
  rooms.add(roomId);
  await join(ctx, topic(roomId));
  await ctx.publish(topic(roomId), UserJoined, {
    roomId,
    userId: ctx.data.clientId,
    ...(username === undefined ? {} : { username }),
  });
});

router.on(SendMessage, async (ctx) => {
  const { roomId, text } = ctx.payload;
  if (!roomsOf(ctx).has(roomId)) {
    ctx.error("PERMISSION_DENIED", `join room ${JSON.stringify(roomId)} before sending to it`);
    return;
  }
  await ctx.publish(topic(roomId), NewMessage, {
    roomId,
    userId: ctx.data.clientId,
    text,
    timestamp: Date.now(),
  });
});

router.on(LeaveRoom, async (ctx) => {
  const { roomId } = ctx.payload;
  const rooms = roomsOf(ctx);
  if (!rooms.delete(roomId)) return;
  await leave(ctx, topic(roomId));
  await ctx.publish(topic(roomId), UserLeft, { roomId, userId: ctx.data.clientId });
});

router.rpc(Echo, (ctx) => {
  ctx.reply(ctx.payload);
});

router.rpc(BenchSubscribe, async (ctx) => {
  const { roomId } = ctx.payload;
  roomsOf(ctx).add(roomId);
  await join(ctx, topic(roomId));
  ctx.reply({ roomId });
});

const { fetch, websocket } = createBunHandler(router, {
  onClose: ({ data }) => {
    const rooms = (data as Data).rooms;
    if (!rooms) return;
    for (const roomId of rooms) {
      void router.publish(topic(roomId), UserLeft, { roomId, userId: data.clientId });
    }
  },
});
server.reload({
  fetch(req, srv) {
    if (new URL(req.url).pathname === "/ws") return fetch(req, srv);
    return new Response("Not Found", { status: 404 });
  },
  websocket,
});
console.log(`listening ws=127.0.0.1:${server.port}`);
