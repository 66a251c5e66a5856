#!/usr/bin/env python3
"""Independent Python client for the signalbox WebSocket protocol.

Written against the wire format only (docs/PROTOCOL.md §1-§4, §6, §9), with PyPI
`websockets` (asyncio client) and `msgpack`.

    python3 python_websockets_client.py ws://127.0.0.1:8080/ws

Prints "ok - ..." / "not ok - ..." per check and a closing "N passed, N failed";
exits 1 on any mismatch.
"""

import asyncio
import json
import secrets
import sys

import msgpack
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

TIMEOUT = 5.0
OVERALL_TIMEOUT = 60.0
RUN = secrets.token_hex(3)

passed = 0
failed = 0


class Mismatch(Exception):
    pass


def check_that(cond, what):
    if not cond:
        raise Mismatch(what)


async def check(name, coro_fn):
    global passed, failed
    try:
        await coro_fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
        failed += 1
        print(f"not ok - {name}: {type(e).__name__}: {e}", flush=True)
        return False
    passed += 1
    print(f"ok - {name}", flush=True)
    return True


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class Client:
    """One connection, its codec, an inbox filled by a reader task, predicate waits."""

    def __init__(self, ws, codec):
        self.ws = ws
        self.codec = codec
        self.inbox = []
        self.changed = asyncio.Condition()
        self.closed = None
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url, subprotocols, expect_protocol):
        ws = await connect(url, subprotocols=subprotocols, open_timeout=TIMEOUT, max_size=2**22)
        if ws.subprotocol != expect_protocol:
            await ws.close()
            raise Mismatch(f"server picked subprotocol {ws.subprotocol!r}, expected {expect_protocol!r}")
        return cls(ws, expect_protocol or "json")

    def encode(self, msg):
        if self.codec == "msgpack":
            return msgpack.packb(msg, use_bin_type=True)
        return json.dumps(msg, ensure_ascii=False, separators=(",", ":"))

    def decode(self, frame):
        if self.codec == "msgpack":
            check_that(isinstance(frame, bytes), "msgpack connection got a text frame")
            return msgpack.unpackb(frame, raw=False)
        return json.loads(frame)

    async def send(self, msg):
        await self.ws.send(msg if isinstance(msg, (str, bytes)) else self.encode(msg))

    async def _read(self):
        try:
            async for frame in self.ws:
                try:
                    msg = self.decode(frame)
                    if isinstance(msg, dict):
                        msg["__binary"] = isinstance(frame, bytes)
                except Exception as e:  # noqa: BLE001
                    msg = {"type": "__undecodable", "error": str(e)}
                async with self.changed:
                    self.inbox.append(msg)
                    self.changed.notify_all()
        finally:
            async with self.changed:
                self.closed = (self.ws.close_code, self.ws.close_reason)
                self.changed.notify_all()

    def _take(self, pred):
        for i, m in enumerate(self.inbox):
            try:
                if pred(m):
                    return self.inbox.pop(i)
            except Exception:  # noqa: BLE001 - a predicate that fails does not match
                pass
        return None

    def _seen(self):
        return repr([{k: v for k, v in m.items() if k != "__binary"} for m in self.inbox])[:600] or "nothing"

    async def expect_reply(self, correlation_id, what, timeout=TIMEOUT):
        """The answer to a request: the first message carrying `correlation_id`, or the first
        ERROR/RPC_ERROR (which must then carry it), so a missing correlationId fails at once."""
        m = await self.expect(lambda x: cid(correlation_id)(x) or x["type"] in ("ERROR", "RPC_ERROR"), what, timeout)
        check_that((m.get("meta") or {}).get("correlationId") == correlation_id,
                   f"{what}: reply should carry correlationId {correlation_id!r}: {m!r}")
        return m

    async def expect(self, pred, what, timeout=TIMEOUT):
        async def wait():
            async with self.changed:
                while True:
                    m = self._take(pred)
                    if m is not None:
                        return m
                    if self.closed:
                        raise Mismatch(f"{what}: connection closed {self.closed}; got {self._seen()}")
                    await self.changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise Mismatch(f"{what}: nothing within {timeout} s; got {self._seen()}") from None

    async def expect_none(self, pred, what, delay=0.3):
        await asyncio.sleep(delay)
        m = self._take(pred)
        check_that(m is None, f"{what}: unexpected {m!r}")

    async def close(self):
        await self.ws.close()
        try:
            await asyncio.wait_for(self.reader, TIMEOUT)
        except Exception:  # noqa: BLE001
            pass
        return self.ws.close_code


def cid(value):
    return lambda m: (m.get("meta") or {}).get("correlationId") == value


def check_timestamp(m, what):
    ts = (m.get("meta") or {}).get("timestamp")
    check_that(is_int(ts) and ts > 1.5e12, f"{what}: meta.timestamp should be an integer in ms, got {m.get('meta')!r}")


def check_error(m, code):
    check_that(m["type"] == "ERROR", f"type {m['type']!r}: {m!r}")
    p = m.get("payload") or {}
    check_that(p.get("code") == code, f"payload.code {p.get('code')!r} != {code}: {m!r}")
    check_that(isinstance(p.get("message"), str), f"payload.message should be a string: {p!r}")
    check_timestamp(m, "ERROR")


async def codec_checks(url, codec):
    room = f"interop-py-{codec}-{RUN}"
    state = {}

    async def upgrade():
        state["c"] = await Client.open(url, [codec], codec)

    if not await check(f"{codec}: upgrade picks subprotocol {codec}", upgrade):
        return
    c = state["c"]

    async def join():
        await c.send({"type": "JOIN_ROOM", "meta": {"correlationId": "join-1"},
                      "payload": {"roomId": room, "username": f"py-{codec}"}})
        m = await c.expect(lambda x: x["type"] == "USER_JOINED" and x["payload"]["roomId"] == room, "USER_JOINED")
        uid = m["payload"].get("userId")
        check_that(isinstance(uid, str) and uid, f"userId should be a non-empty string: {m['payload']!r}")
        check_that(m["payload"].get("username") == f"py-{codec}", f"username {m['payload'].get('username')!r}")
        check_timestamp(m, "USER_JOINED")
        state["me"] = uid

    await check(f"{codec}: JOIN_ROOM -> USER_JOINED with own userId", join)

    async def send_message():
        text = f"hello from python {codec} — ünïcødé 🐍"
        await c.send({"type": "SEND_MESSAGE", "meta": {"correlationId": "send-1", "clientId": "forged"},
                      "payload": {"roomId": room, "text": text}})
        m = await c.expect(lambda x: x["type"] == "NEW_MESSAGE" and x["payload"]["roomId"] == room, "NEW_MESSAGE")
        p = m["payload"]
        check_that(p.get("text") == text, f"text {p.get('text')!r}")
        check_that(p.get("userId") == state.get("me"), f"payload.userId {p.get('userId')!r} != own {state.get('me')!r}")
        check_that((m.get("meta") or {}).get("clientId") == state.get("me"),
                   f"meta.clientId {(m.get('meta') or {}).get('clientId')!r} != {state.get('me')!r}")
        check_that(is_int(p.get("timestamp")), f"payload.timestamp {p.get('timestamp')!r}")
        check_timestamp(m, "NEW_MESSAGE")

    await check(f"{codec}: SEND_MESSAGE -> NEW_MESSAGE (userId, meta.clientId)", send_message)

    async def echo():
        payload = {
            "big": 18446744073709551615,  # u64::MAX
            "above53": 9007199254740993,  # 2^53 + 1
            "negBig": -9007199254740993,
            "float": 0.1,
            "float2": -2.5,
            "floatWhole": 2.0,
            "small": 42,
            "str": "ünïcødé",
            "nested": {"list": [1, "two", None, True, {"x": 3.25}], "empty": {}},
        }
        if codec == "msgpack":
            payload["bin"] = b"\x00\x01\x02\xfe\xff"
        await c.send({"type": "ECHO", "meta": {"correlationId": "echo-1"}, "payload": payload})
        m = await c.expect_reply("echo-1", "ECHO reply")
        check_that(m["type"] == "ECHO", f"type {m['type']!r}: {m!r}")
        got = m.get("payload")
        check_that(got == payload, f"payload differs:\n  sent {payload!r}\n  got  {got!r}")
        # == treats 2 and 2.0 alike; the types must survive too.
        for key in ("float", "float2", "floatWhole"):
            check_that(isinstance(got[key], float), f"{key} came back as {type(got[key]).__name__}")
        for key in ("big", "above53", "negBig", "small"):
            check_that(is_int(got[key]), f"{key} came back as {type(got[key]).__name__}")
        if codec == "msgpack":
            check_that(isinstance(got["bin"], bytes), f"bin came back as {type(got['bin']).__name__}, expected bytes")
        check_timestamp(m, "ECHO")

    await check(f"{codec}: ECHO round trip with correlationId and identical payload", echo)

    async def echo_empty():
        await c.send({"type": "ECHO", "meta": {"correlationId": "echo-empty"}})
        m = await c.expect_reply("echo-empty", "ECHO reply")
        check_that(m["type"] == "ECHO" and "payload" not in m, f"expected ECHO without payload: {m!r}")

    await check(f"{codec}: ECHO without payload answered without one", echo_empty)

    async def permission():
        await c.send({"type": "SEND_MESSAGE", "meta": {"correlationId": "perm-1"},
                      "payload": {"roomId": f"not-joined-{RUN}", "text": "x"}})
        check_error(await c.expect_reply("perm-1", "error reply"), "PERMISSION_DENIED")

    await check(f"{codec}: SEND_MESSAGE to a room not joined -> ERROR PERMISSION_DENIED", permission)

    async def unimplemented():
        await c.send({"type": "NO_SUCH_TYPE_X", "meta": {"correlationId": "unimpl-1"}, "payload": {"a": 1}})
        check_error(await c.expect_reply("unimpl-1", "error reply"), "UNIMPLEMENTED")

    await check(f"{codec}: unknown type -> ERROR UNIMPLEMENTED with correlationId", unimplemented)

    async def unknown_key():
        await c.send({"type": "SEND_MESSAGE", "meta": {"correlationId": "badkey-1"},
                      "payload": {"roomId": room, "text": "x"}, "bogus": 1})
        check_error(await c.expect_reply("badkey-1", "error reply"), "INVALID_ARGUMENT")

    await check(f"{codec}: unknown top-level key -> ERROR INVALID_ARGUMENT with correlationId", unknown_key)

    async def heartbeat():
        await c.send({"type": "__heartbeat"})
        m = await c.expect(lambda x: x["type"] == "__heartbeat_ack", "__heartbeat_ack")
        check_timestamp(m, "__heartbeat_ack")
        check_that(m["__binary"] == (codec == "msgpack"), "ack frame kind does not match the codec")

    await check(f"{codec}: __heartbeat -> __heartbeat_ack with meta.timestamp", heartbeat)

    async def still_open():
        await c.send({"type": "ECHO", "meta": {"correlationId": "still-open"}, "payload": "ping"})
        m = await c.expect_reply("still-open", "ECHO reply")
        check_that(m["type"] == "ECHO" and m.get("payload") == "ping", repr(m))

    await check(f"{codec}: connection still open after the errors", still_open)

    async def close():
        code = await c.close()
        check_that(code == 1000, f"close code {code}")

    await check(f"{codec}: normal close", close)


async def negotiation_checks(url):
    async def no_offer():
        c = await Client.open(url, None, None)
        await c.send({"type": "ECHO", "meta": {"correlationId": "noproto"}, "payload": {"a": 1}})
        m = await c.expect_reply("noproto", "ECHO reply")
        check_that(m["type"] == "ECHO" and m["__binary"] is False, f"expected a JSON text frame: {m!r}")
        await c.close()

    await check("no subprotocol offered -> json", no_offer)

    async def unknown_only():
        try:
            ws = await connect(url, subprotocols=["x-unknown-codec"], open_timeout=TIMEOUT)
        except InvalidStatus as e:
            status = e.response.status_code
            check_that(status == 400, f"HTTP {status}")
            return
        await ws.close()
        raise Mismatch(f"upgrade accepted (subprotocol {ws.subprotocol!r})")

    await check("only an unknown subprotocol offered -> upgrade refused with HTTP 400", unknown_only)


async def main(url):
    await negotiation_checks(url)
    for codec in ("json", "msgpack"):
        await codec_checks(url, codec)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python3 python_websockets_client.py WS_URL   (e.g. ws://127.0.0.1:8080/ws)", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1]), OVERALL_TIMEOUT))
    except asyncio.TimeoutError:
        print(f"FAIL: did not finish within {OVERALL_TIMEOUT:.0f} s", file=sys.stderr)
        failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
