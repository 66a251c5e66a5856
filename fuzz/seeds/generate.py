#!/usr/bin/env python3
"""Writes the fuzzers' starting corpora (fuzz/seeds/<target>/) from the envelopes below.

Run from anywhere: python3 fuzz/seeds/generate.py. Needs the `msgpack`
package. Seeds are small on purpose: the fuzzer grows its own corpus in
fuzz/corpus/ (not committed)."""
import base64, gzip, hashlib, json, os, struct
import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))

ENVELOPES = [
    {"type": "SEND_MESSAGE", "meta": {"correlationId": "r-17", "timestamp": 1764160000000},
     "payload": {"roomId": "lobby", "text": "hi"}},
    {"type": "JOIN_ROOM", "payload": {"roomId": "lobby", "username": "ada"}},
    {"type": "PING"},
    {"type": "ECHO", "meta": {"correlationId": "e", "traceId": "t-9", "clientId": "spoof"},
     "payload": [1, -2, 3.5, None, True, "x", {"k": [[]]}]},
    {"type": "__heartbeat"},
    {"type": "$ws:rpc-progress", "meta": {"correlationId": "p"}, "payload": None},
    {"type": "EVERYTHING", "payload": {
        "a": 7, "b": [1, -1], "c": 1.0000000000000002, "d": False, "e": None,
        "f": {"x": "y"}, "g": {"kind": "rect", "w": 2, "h": 3}, "h": [1, "two", [3]],
        "i": {"any": [None]}, "j": [1, "c", "s"]}},
    {"type": "USER_UPDATE", "payload": {"name": "n", "version": 1}},
    {"type": "USER_UPDATE", "payload": {"name": "n", "avatar": None, "version": 2}},
]

JSON_EXTRA = [
    b'{"type":"SAY","meta":{"correlationId":"r-1"},"payload":{"text":"x"},"extra":1}',
    b'{"type":"ECHO","payload":{"n":18446744073709551615,"f":1e308,"s":"\\u00e9\\ud83d\\ude00"}}',
    b'{"type":"","payload":1}',
    b'[' * 64 + b']' * 64,
    b'{"type":"A","type":"B"}',
    b' \t\n{"type" : "X" , "meta" : null}\n',
]


def msgpack_extra():
    out = []
    # Map with a bin payload, an int above 2^53, and an ext value.
    out.append(msgpack.packb({"type": "ECHO", "payload": {
        "b": b"\x00\xff", "n": 2**63 + 5, "x": msgpack.ExtType(5, b"abcd")}}, use_bin_type=True))
    # A lying array32 length.
    out.append(b"\x82\xa4type\xa4ECHO\xa7payload\xdd\xff\xff\xff\xff\x01")
    # Deep nesting.
    out.append(b"\x82\xa4type\xa4ECHO\xa7payload" + b"\x91" * 64 + b"\xc0")
    # Reserved marker, trailing bytes.
    out.append(b"\x81\xa4type\xc1")
    out.append(msgpack.packb({"type": "PING"}) + b"\x00")
    return out


def compressed_json(inner: bytes) -> bytes:
    data = base64.b64encode(gzip.compress(inner, mtime=0)).decode()
    return json.dumps({"type": "COMPRESSED", "payload": {"encoding": "gzip", "data": data}},
                      separators=(",", ":")).encode()


def compressed_msgpack(inner: bytes) -> bytes:
    return msgpack.packb({"type": "COMPRESSED", "payload": {
        "encoding": "gzip", "data": gzip.compress(inner, mtime=0)}}, use_bin_type=True)


def write(target, seeds):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    for s in seeds:
        name = hashlib.sha1(s).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(s)


def main():
    js = [json.dumps(e, separators=(",", ":")).encode() for e in ENVELOPES] + JSON_EXTRA
    mp = [msgpack.packb(e, use_bin_type=True) for e in ENVELOPES] + msgpack_extra()
    write("json_envelope", js)
    write("msgpack_envelope", mp)

    # wire_decode: selector byte = codec (low 2 bits: json, msgpack,
    # json+gzip, msgpack+gzip) + mode (bits 2..: 0 frame, 1 gzip bytes to
    # wrap, 2 inner envelope to gzip and wrap).
    wire = []
    for codec, seeds, wrap in ((0, js, compressed_json), (1, mp, compressed_msgpack)):
        for s in seeds[:4]:
            wire.append(bytes([codec]) + s)
            wire.append(bytes([codec | 2]) + wrap(s))
            wire.append(bytes([codec | 4]) + gzip.compress(s, mtime=0))
            wire.append(bytes([codec | 8]) + s)
        # A small bomb: 1 MiB of zeros, inflating past the 64 KiB limit.
        wire.append(bytes([codec | 4]) + gzip.compress(b"\0" * (1 << 20), mtime=0))
        # Two gzip members, the second corrupt.
        wire.append(bytes([codec | 4]) + gzip.compress(seeds[0], mtime=0) + b"\x1f\x8b\x08\x00garbage")
    write("wire_decode", wire)

    # payload_dispatch: selector byte = format (0 json, 1 msgpack).
    write("payload_dispatch", [b"\x00" + s for s in js] + [b"\x01" + s for s in mp])

    # quic_frames: max-size byte (255 = 1 MiB), split-pattern byte, then a
    # stream of 4-byte big-endian lengths and bodies.
    def framed(bodies):
        return b"".join(struct.pack(">I", len(b)) + b for b in bodies)
    write("quic_frames", [
        b"\xff\x00" + framed(js[:3]),
        b"\xff\x05" + framed(mp[:3] + [b""]),
        b"\x40\x01" + framed([b"x" * 64, b"y" * 65]),
        b"\xff\x02" + struct.pack(">I", 0xFFFFFFFF) + b"rest",
        b"\x10\x03" + framed([b"abc"]) + b"\x00\x00",
    ])


if __name__ == "__main__":
    main()
