"""Hostile input for the readers of recordings and traces (issue 23: 7, 8):
recordings of real records mixed with records whose frame and CRC check
but whose bodies are random or extreme, marks of random JSON, garbage,
cuts and flipped bytes; request traces of random JSON and extreme
numbers.  Seeded: a failure names its seed."""

from __future__ import annotations

import json
import random
import zlib
from typing import Any

from kvcpu_dev.bench import kvrec as fmt
from kvcpu_dev.device import abi

EXTREMES = [0, 1, 2, 255, 4096, 2**20, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**52, 2**53 + 1,
            2**62, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
COMMANDS = [c.number for c in abi.COMMANDS.values()]


def number(rng: random.Random, bits: int = 64) -> int:
    return rng.choice([e for e in EXTREMES if e < 2**bits] + [rng.getrandbits(bits)])


def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.35:
        return rng.choice([None, True, False, number(rng), -number(rng), 10**400 if rng.random() < 0.1 else 0.5,
                           float("nan"), float("inf"), -1e308, "", "start", "stop", "\x1b[2J", "x" * 300])
    if roll < 0.6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["mark", "telemetry", "model_config", "device", "events", "lost", "x", *abi.TELEMETRY_FIELDS[:3]]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


TOML_SNIPPETS = [
    "entries = 0", "entries = 1", "entries = 64", "entries = \"x\"", "entries = 1e400",
    "block_size = \"1e400\"", "block_size = 0", "block_size = \"2MiB\"", "clock = 5", "clock = \"wall\"",
    "step_period = -1.0", "step_period = nan", "step_period = inf", "initial_tier = 9", "r_decay_shift = 99",
    "[tiers.hbm]\ncapacity = -1", "[tiers.hbm]\ncapacity = 4096", "[tiers.t1]\nbandwidth = 0",
    "[tiers.nope]\nx = 1", "tiers = 3", "a = " + "[" * 3000 + "]" * 3000, "= = =", "\x00\x01", "unknown = 1",
]


def mark_body(rng: random.Random) -> bytes:
    """A mark: the recorder's JSON with random or extreme parts, or random JSON."""
    roll = rng.random()
    if roll < 0.25:
        meta: Any = random_json(rng)
    elif roll < 0.35:
        meta = None
        blob = rng.choice([b"[" * 30000 + b"]" * 30000, b'"start"', b"[1, 2]", b"\xff\xfe", b"{", b"1e999999"])
        return _body(fmt.KIND_MARK, 0, 0, blob)
    elif roll < 0.8:
        telemetry: dict[str, Any] = {k: number(rng) for k in abi.TELEMETRY_FIELDS}
        if rng.random() < 0.3:
            telemetry[rng.choice(abi.TELEMETRY_FIELDS)] = random_json(rng)
        # mostly none (the defaults), so most files reach the model; else snippets, valid or not
        config = "\n".join(rng.sample(TOML_SNIPPETS, rng.randrange(1, 3))) if rng.random() < 0.15 else None
        meta = {"mark": "start", "device": "fz", "telemetry": telemetry, "model_config": config}
    else:
        meta = {"mark": "stop", "device": "fz", "events": number(rng), "lost": rng.choice([number(rng), -1, 0.5])}
    return _body(fmt.KIND_MARK, 0, 0, json.dumps(meta).encode()[:65535])


def _body(kind: int, cmd: int, err: int, data: bytes, writes: tuple[tuple[int, int, int], ...] = (),
          seq: int = 1, t_ns: int = 0, comm: bytes = b"") -> bytes:
    return b"".join((fmt.BODY.pack(seq, t_ns, cmd, 1234, err, 0, 0, 0, kind, len(writes), len(data), len(comm)),
                     data, *(fmt.WRITE.pack(*w) for w in writes), comm))


def structured_body(rng: random.Random, seq: int, t_ns: int) -> bytes:
    """A body shaped like the writer's, with every number extreme or random:
    most pass the reader's checks and reach replay and the evaluation."""
    kind = rng.choice([fmt.KIND_IOCTL] * 8 + [fmt.KIND_STORE, fmt.KIND_RESET, fmt.KIND_UNPLUG, fmt.KIND_REPLUG,
                                              rng.randrange(256)])
    if kind == fmt.KIND_MARK or rng.random() < 0.08:
        return mark_body(rng)
    writes = tuple((number(rng), rng.randrange(0, 0x600, 8), number(rng)) for _ in range(rng.randrange(4)))
    err = 0 if rng.random() < 0.8 else rng.choice([1, 5, 22, 19, 25, 4095])
    if kind == fmt.KIND_IOCTL:
        cmd = rng.choice(COMMANDS + [rng.getrandbits(32)])
        command = abi.BY_NUMBER.get(cmd)
        if command is not None:
            fields = [number(rng, 32 if code == "I" else 64)
                      for code in command.layout.codec.format.lstrip("<=@")]
            data = command.layout.codec.pack(*fields)
        else:
            data = rng.randbytes(rng.randrange(97))
        if err:
            writes = ()
    elif kind == fmt.KIND_STORE:
        cmd, data = rng.choice([0, 1, 5, 6, 99]), number(rng, 32).to_bytes(4, "little")
    else:
        cmd, data = 0, b""
    comm = rng.choice([b"", b"vllm", b"\x1b]0;pwn\x07", rng.randbytes(rng.randrange(20))])
    return _body(kind, cmd, err, data, writes, seq, t_ns, comm)


def recording(rng: random.Random, records: int = 60, version: int = fmt.VERSION) -> bytes:
    """A file: a header, then real-looking records, records no writer
    produces, random bodies behind valid frames, garbage, cuts and flips."""
    out = bytearray(fmt.header_bytes({"created_by": "recfuzz"}, version=version))
    t = rng.choice([0, 1, 2**62, 2**64 - 10**12])
    for seq in range(1, records + 1):
        t = min(t + rng.choice([1, 20_000_000, 2**63, 0]), 2**64 - 1)
        roll = rng.random()
        if roll < 0.65:
            body = structured_body(rng, rng.choice([seq, number(rng)]), t)
        elif roll < 0.8:
            body = rng.randbytes(rng.randrange(fmt.BODY.size, 300))
        elif roll < 0.9:
            out += rng.randbytes(rng.randrange(1, 64))  # garbage between records
            continue
        else:
            body = mark_body(rng)
        out += fmt.frame(body, version)
    for _ in range(rng.randrange(3)):  # flips
        pos = rng.randrange(fmt.HEADER.size, len(out))
        out[pos] ^= 1 << rng.randrange(8)
    if rng.random() < 0.3:
        out = out[:rng.randrange(fmt.HEADER.size, len(out) + 1)]
    return bytes(out)


def bogus_frames(count: int) -> bytes:
    """Frames that check, each claiming the longest body: the search past
    them is what a reader must bound."""
    head = fmt.SYNC + fmt.MAX_BODY.to_bytes(4, "little") + bytes(4)
    return (head + zlib.crc32(head).to_bytes(4, "little")) * count


def body(kind: int, cmd: int = 0, err: int = 0, data: bytes = b"", writes: tuple = (), nwrites: int | None = None,
         comm: bytes = b"") -> bytes:
    """A record body as a writer lays it out, whatever its contents."""
    n = len(writes) if nwrites is None else nwrites
    return b"".join((fmt.BODY.pack(7, 1000, cmd, 1, err, 0, 0, 0, kind, n, len(data), len(comm)),
                     data, *(fmt.WRITE.pack(*w) for w in writes), comm))


#: Records whose frame and CRC check but whose contents no writer
#: produces; each made kvctl log, replay or kvcpu-eval raise a traceback.
IMPOSSIBLE = {
    "register writes past the body": body(fmt.KIND_IOCTL, abi.KV_CPU_STEP_ADVANCE,
                                          data=abi.STEP_INFO.codec.pack(1), nwrites=200),
    "seven register writes": body(fmt.KIND_IOCTL, abi.KV_CPU_STEP_ADVANCE, data=abi.STEP_INFO.codec.pack(1),
                                  writes=((1, 0x100, 1),) * 7),
    "a write outside BAR0": body(fmt.KIND_IOCTL, abi.KV_CPU_STEP_ADVANCE, data=abi.STEP_INFO.codec.pack(1),
                                 writes=((1, 0x10000, 1),)),
    "a mark that is a list": body(fmt.KIND_MARK, data=b"[1, 2]"),
    "a mark that is a string": body(fmt.KIND_MARK, data=b'"start"'),
    "a 30,000-deep mark": body(fmt.KIND_MARK, data=b"[" * 30000 + b"]" * 30000),
    "a start mark without telemetry": body(fmt.KIND_MARK, data=b'{"mark": "start", "telemetry": [1]}'),
    "a start mark with NaN telemetry": body(
        fmt.KIND_MARK, data=b'{"mark": "start", "telemetry": {%s}}' % b", ".join(
            b'"%s": NaN' % k.encode() for k in abi.TELEMETRY_FIELDS)),
    "a stop mark with a negative count": body(fmt.KIND_MARK, data=b'{"mark": "stop", "lost": -1}'),
    "a mark named by a list": body(fmt.KIND_MARK, data=b'{"mark": ["start"]}'),
    "a mark with a key no writer writes": body(fmt.KIND_MARK, data=b'{"mark": "stop", "x": NaN}'),
    "a short TELEMETRY reply": body(fmt.KIND_IOCTL, abi.KV_CPU_GET_TELEMETRY, data=b"\x01" * 40),
    "a successful unknown ioctl": body(fmt.KIND_IOCTL, 0xC0DE),
    "a store of weight 99": body(fmt.KIND_STORE, 99, data=b"\x01\0\0\0"),
    "a store of 3 bytes": body(fmt.KIND_STORE, 1, data=b"\x01\0\0"),
    "a reset with a payload": body(fmt.KIND_RESET, data=b"x"),
    "kind 77": body(77),
    "errno 70000": body(fmt.KIND_IOCTL, abi.KV_CPU_STEP_ADVANCE, err=70000),
    "a failed ioctl that wrote": body(fmt.KIND_IOCTL, abi.KV_CPU_STEP_ADVANCE, err=5, writes=((1, 0x100, 1),)),
    "a 97-byte payload": body(fmt.KIND_IOCTL, abi.KV_CPU_GET_TELEMETRY, err=5, data=bytes(97)),
}


def trace_line(rng: random.Random) -> bytes:
    """One line of a request trace, valid or hostile."""
    roll = rng.random()
    if roll < 0.3:
        return json.dumps({"timestamp": rng.uniform(0, 1e6), "input_length": rng.randrange(4096),
                           "output_length": rng.randrange(512),
                           "hash_ids": [rng.randrange(2000) for _ in range(rng.randrange(1, 30))]}).encode()
    if roll < 0.75:
        obj: dict[str, Any] = {"timestamp": rng.choice([0, -1, 1e308, float("nan"), float("inf"), "1", None, True]),
                               "input_length": rng.choice([0, -1, 2**63, 1.5, 1e400 if rng.random() < .1 else 2, "7"]),
                               "output_length": rng.choice([0, 2**31, None, []]),
                               "hash_ids": rng.choice([[number(rng)], [2**63], [-1], [2**64 + 5], [1.5], [True],
                                                       [[1]], "123", None, list(range(50))])}
        for key in rng.sample(list(obj), rng.randrange(2)):
            del obj[key]
        return json.dumps(obj).encode()
    if roll < 0.85:
        return json.dumps(random_json(rng)).encode()
    return rng.choice([b"[" * 50000, b"{" * 30000 + b"}", rng.randbytes(200), b"\xef\xbb\xbf{}", b"NaN",
                       b"{\"hash_ids\": [" + b"9" * 5000 + b"]}", b"x" * 2_000_000])


def trace(rng: random.Random, lines: int = 40) -> bytes:
    return b"\n".join(trace_line(rng) for _ in range(lines)) + rng.choice([b"\n", b""])
