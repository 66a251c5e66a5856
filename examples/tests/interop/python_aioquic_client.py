#!/usr/bin/env python3
"""Independent QUIC client for the signalbox protocol (docs/PROTOCOL.md §1, §5, §6, §9), with PyPI `aioquic`.

    python3 python_aioquic_client.py HOST PORT CERT_PEM
    python3 python_aioquic_client.py 127.0.0.1 4433 /tmp/chat-cert.pem

For ALPN signalbox/json and signalbox/msgpack: connects trusting CERT_PEM
(server name "localhost"), opens one bidirectional stream, sends framed
envelopes (4-byte big-endian length + encoded envelope) and checks
JOIN_ROOM -> USER_JOINED, SEND_MESSAGE -> NEW_MESSAGE, the ECHO round trip and
an ERROR; then checks that an unknown ALPN fails the handshake.
Prints "ok - ..." / "not ok - ..." per check and "N passed, N failed"; exits 1
on any mismatch.
"""

import asyncio
import json
import secrets
import ssl
import struct
import sys

import msgpack
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset

TIMEOUT = 5.0
OVERALL_TIMEOUT = 60.0
SERVER_NAME = "localhost"
MAX_FRAME = 1 << 20  # the protocol's default maximum message size
NO_APPLICATION_PROTOCOL = 0x178  # QUIC CRYPTO_ERROR 0x100 + TLS alert 120
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


class FramedClient(QuicConnectionProtocol):
    """Keeps one client-opened bidirectional stream and splits it into frames."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.codec = "json"
        self.stream_id = None
        self.buffer = b""
        self.inbox = []
        self.changed = asyncio.Event()
        self.terminated = None
        self.problem = None

    # -- wire ---------------------------------------------------------------
    def encode(self, msg):
        if self.codec == "msgpack":
            return msgpack.packb(msg, use_bin_type=True)
        return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def decode(self, data):
        if self.codec == "msgpack":
            return msgpack.unpackb(data, raw=False)
        return json.loads(data.decode("utf-8"))

    def send(self, msg):
        body = msg if isinstance(msg, bytes) else self.encode(msg)
        if self.stream_id is None:
            self.stream_id = self._quic.get_next_available_stream_id(is_unidirectional=False)
        self._quic.send_stream_data(self.stream_id, struct.pack(">I", len(body)) + body, end_stream=False)
        self.transmit()

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            if event.stream_id != self.stream_id:
                # Extra lanes are opt-in (docs/PROTOCOL.md §5); a client that asked for none gets none.
                self.problem = f"data on unexpected stream {event.stream_id}"
            else:
                self.buffer += event.data
                while len(self.buffer) >= 4:
                    (n,) = struct.unpack(">I", self.buffer[:4])
                    if n > MAX_FRAME:
                        self.problem = f"frame length {n} above the maximum"
                        self.buffer = b""
                        break
                    if len(self.buffer) < 4 + n:
                        break
                    body, self.buffer = self.buffer[4:4 + n], self.buffer[4 + n:]
                    try:
                        self.inbox.append(self.decode(body))
                    except Exception as e:  # noqa: BLE001
                        self.inbox.append({"type": "__undecodable", "error": str(e)})
                if event.end_stream and self.buffer:
                    self.problem = f"stream ended inside a frame ({len(self.buffer)} bytes left)"
        elif isinstance(event, StreamReset):
            self.problem = f"stream {event.stream_id} reset with code {event.error_code}"
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        self.changed.set()

    # -- waits --------------------------------------------------------------
    def _take(self, pred):
        for i, m in enumerate(self.inbox):
            try:
                if pred(m):
                    return self.inbox.pop(i)
            except Exception:  # noqa: BLE001
                pass
        return None

    async def expect_reply(self, correlation_id, what, timeout=TIMEOUT):
        """The answer to a request: the first message carrying `correlation_id`, or the first
        ERROR/RPC_ERROR (which must then carry it), so a missing correlationId fails at once."""
        m = await self.expect(lambda x: cid(correlation_id)(x) or x["type"] in ("ERROR", "RPC_ERROR"), what, timeout)
        check_that((m.get("meta") or {}).get("correlationId") == correlation_id,
                   f"{what}: reply should carry correlationId {correlation_id!r}: {m!r}")
        return m

    async def expect(self, pred, what, timeout=TIMEOUT):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            m = self._take(pred)
            if m is not None:
                return m
            if self.problem:
                raise Mismatch(f"{what}: {self.problem}")
            if self.terminated:
                t = self.terminated
                raise Mismatch(f"{what}: connection closed (code {t.error_code:#x} {t.reason_phrase!r}); got {self.inbox!r}")
            left = deadline - loop.time()
            if left <= 0:
                raise Mismatch(f"{what}: nothing within {timeout} s; got {self.inbox!r}"[:800])
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass


def configuration(alpn, cert_pem):
    config = QuicConfiguration(is_client=True, alpn_protocols=[alpn], server_name=SERVER_NAME)
    config.verify_mode = ssl.CERT_REQUIRED
    config.load_verify_locations(cafile=cert_pem)
    config.idle_timeout = 5.0
    return config


def cid(value):
    return lambda m: (m.get("meta") or {}).get("correlationId") == value


def check_timestamp(m, what):
    ts = (m.get("meta") or {}).get("timestamp")
    check_that(is_int(ts) and ts > 1.5e12, f"{what}: meta.timestamp should be an integer in ms, got {m.get('meta')!r}")


async def codec_checks(host, port, cert_pem, codec):
    alpn = f"signalbox/{codec}"
    room = f"interop-quic-{codec}-{RUN}"
    state = {}

    def factory(*args, **kwargs):
        state["client"] = FramedClient(*args, **kwargs)
        return state["client"]

    async def session():
        try:
            async with connect(host, port, configuration=configuration(alpn, cert_pem),
                               create_protocol=factory, wait_connected=True) as client:
                client.codec = codec
                await run_checks(client)
                client.close(error_code=0, reason_phrase="done")  # application close code 0: normal
            # connect's exit waited for the close to complete
        except ConnectionError:
            t = state["client"].terminated if "client" in state else None
            detail = f"code {t.error_code:#x} {t.reason_phrase!r}" if t else "no answer"
            raise Mismatch(f"handshake failed ({detail})") from None

    async def run_checks(c):
        check_that(c._quic.tls.alpn_negotiated == alpn,
                   f"negotiated ALPN {c._quic.tls.alpn_negotiated!r}, expected {alpn!r}")

        async def join():
            c.send({"type": "JOIN_ROOM", "meta": {"correlationId": "join-1"},
                    "payload": {"roomId": room, "username": f"quic-{codec}"}})
            m = await c.expect(lambda x: x["type"] == "USER_JOINED" and x["payload"]["roomId"] == room, "USER_JOINED")
            uid = m["payload"].get("userId")
            check_that(isinstance(uid, str) and uid, f"userId should be a non-empty string: {m['payload']!r}")
            check_that(m["payload"].get("username") == f"quic-{codec}", f"username {m['payload'].get('username')!r}")
            check_timestamp(m, "USER_JOINED")
            state["me"] = uid

        await check(f"quic {alpn}: JOIN_ROOM -> USER_JOINED", join)

        async def send_message():
            text = f"hello over QUIC {codec} ✓"
            c.send({"type": "SEND_MESSAGE", "meta": {"correlationId": "send-1"},
                    "payload": {"roomId": room, "text": text}})
            m = await c.expect(lambda x: x["type"] == "NEW_MESSAGE" and x["payload"]["roomId"] == room, "NEW_MESSAGE")
            p = m["payload"]
            check_that(p.get("text") == text, f"text {p.get('text')!r}")
            check_that(p.get("userId") == state.get("me"), f"payload.userId {p.get('userId')!r} != {state.get('me')!r}")
            check_that((m.get("meta") or {}).get("clientId") == state.get("me"), f"meta.clientId {m.get('meta')!r}")
            check_that(is_int(p.get("timestamp")), f"payload.timestamp {p.get('timestamp')!r}")

        await check(f"quic {alpn}: SEND_MESSAGE -> NEW_MESSAGE", send_message)

        async def echo():
            payload = {"big": 18446744073709551615, "above53": 9007199254740993, "float": 0.1,
                       "floatWhole": 2.0, "str": "ünïcødé", "list": [1, None, True, {"x": -3}]}
            if codec == "msgpack":
                payload["bin"] = b"\x00\xff\x10"
            c.send({"type": "ECHO", "meta": {"correlationId": "echo-1"}, "payload": payload})
            m = await c.expect_reply("echo-1", "ECHO reply")
            check_that(m["type"] == "ECHO", f"type {m['type']!r}: {m!r}")
            got = m.get("payload")
            check_that(got == payload, f"payload differs:\n  sent {payload!r}\n  got  {got!r}")
            check_that(isinstance(got["floatWhole"], float) and is_int(got["big"]), f"number types changed: {got!r}")
            if codec == "msgpack":
                check_that(isinstance(got["bin"], bytes), f"bin came back as {type(got['bin']).__name__}")
            check_timestamp(m, "ECHO")

        await check(f"quic {alpn}: ECHO round trip with correlationId", echo)

        async def unimplemented():
            c.send({"type": "NO_SUCH_TYPE_X", "meta": {"correlationId": "unimpl-1"}})
            m = await c.expect_reply("unimpl-1", "error reply")
            check_that(m["type"] == "ERROR" and (m.get("payload") or {}).get("code") == "UNIMPLEMENTED", repr(m))

        await check(f"quic {alpn}: unknown type -> ERROR UNIMPLEMENTED, connection kept", unimplemented)

    await check(f"quic {alpn}: handshake, one stream, clean close", session)


async def unknown_alpn_check(host, port, cert_pem):
    holder = {}

    def factory(*args, **kwargs):
        holder["p"] = FramedClient(*args, **kwargs)
        return holder["p"]

    async def attempt():
        try:
            async with connect(host, port, configuration=configuration("signalbox/x-unknown", cert_pem),
                               create_protocol=factory, wait_connected=True) as client:
                client.close()
        except ConnectionError:
            t = holder["p"].terminated if "p" in holder else None
            check_that(t is not None, "handshake failed without a CONNECTION_CLOSE")
            check_that(t.error_code == NO_APPLICATION_PROTOCOL,
                       f"error code {t.error_code:#x} ({t.reason_phrase!r}), expected {NO_APPLICATION_PROTOCOL:#x}")
            return
        raise Mismatch("handshake with an unknown ALPN succeeded")

    async def bounded():
        await asyncio.wait_for(attempt(), TIMEOUT * 2)

    await check("quic: an unknown ALPN fails the handshake (0x178)", bounded)


async def main(host, port, cert_pem):
    for codec in ("json", "msgpack"):
        await codec_checks(host, port, cert_pem, codec)
    await unknown_alpn_check(host, port, cert_pem)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: python3 python_aioquic_client.py HOST PORT CERT_PEM", file=sys.stderr)
        sys.exit(2)
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]), OVERALL_TIMEOUT))
    except asyncio.TimeoutError:
        print(f"FAIL: did not finish within {OVERALL_TIMEOUT:.0f} s", file=sys.stderr)
        failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
