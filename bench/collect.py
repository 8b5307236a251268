"""Collector benchmark: events/s through rawexport's SDK collectors, each next to the native API.

Three of GrowingIO's SDK encodings are posted to a real `rawexport serve` (127.0.0.1, log
level warning, a fresh home with one project made by `rawexport project create`), each
paired with the native event API carrying as many events per request (the reference):

- web: `POST /v3/projects/{ai}/collect?stm=&compress=1`, no Content-Type; the body is the
  lz-string `compressToUint8Array` of a JSON array of 50 web SDK 4.x events (VISIT, PAGE,
  VIEW_CLICK, CUSTOM), one browser a body;
- go: `POST /v3/projects/{ai}/collect?stm=`, `application/protobuf`, `X-Compress-Codec: 2`,
  `X-Crypt-Codec: 1`; a protobuf EventV3List of 500 CUSTOM events, snappy raw block, each
  byte XOR `stm & 0xFF` (the Go SDK's encoding);
- saas: `POST /v3/{ai}/android/pv` and `/v3/{ai}/android/cstm` in turn,
  `application/json`; a JSON array of 50 SaaS short-key events (vst + page, or cstm);
- native (the reference): `POST /api/v1/projects/{ai}/events`, `application/x-ndjson`;
  50 or 500 `custom_event` lines.

The SDK collectors drop an event whose content they saw in the last 10 minutes (an SDK's
re-send), so no event is sent twice in a run: every request is built before the load
(the web bodies compressed by npm lz-string in node, 3-10 ms each: with the default 8 s
that is about a minute), 1.3x as many as the native API took at that batch size in a
2-s warm-up, and a load that has used them all stops there (its rate is then over its own,
shorter, duration; the output says so). The native API does not de-duplicate; its
bodies are distinct all the same.

Load: wrk (2 threads, 64 keep-alive connections, a Lua script sending the pre-built
requests in turn and adding up the answers' `x-rawexport-accepted` / `-rejected` headers)
when installed (or `--client wrk`), else (or `--client asyncio`) an asyncio client of
this file in a process of its own (slower than wrk, and sharing the machine's cores with
the server: the figures name the client).
events/s = events the server acknowledged / duration. Each SDK path and its native
reference are loaded in turn `--repeat` times; each side's figure is its best run, the
p99 the worst of the path's runs. Before the load one request of each kind is checked
(status and accepted/rejected counts); after it, `rawexport_ingest_events_total` from
/metrics must hold at least the events the bench saw acknowledged, with no duplicates
(with wrk it holds more: the requests in flight when a run ends are answered unread).

Targets (a row of their own): each SDK path >= 0.5x its native reference and >= 50,000
events/s; p99 of a 50-event web batch at 64 connections <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.e2e_util import Server, env_for, free_port, run_cli  # noqa: E402

from api import load_average  # noqa: E402  (bench/api.py)
from export import Figure, write_figures  # noqa: E402  (bench/export.py)

CONNECTIONS = 64
WRK_THREADS = 2
# requests built per run: MARGIN x the native rate at that batch size x seconds (a run that
# uses them all up stops there, and its rate is over its own, shorter, duration)
MARGIN = 1.3
TARGET_RATIO = 0.5
TARGET_EVENTS = 50_000.0
TARGET_P99_MS = 20.0
DEVICES = 300  # distinct browsers / apps the bodies come from

CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
ANDROID_UA = "Dalvik/2.1.0 (Linux; U; Android 12; Pixel 6 Build/SD1A.210817.036)"

# The web SDK 4.3.1's events (gdp-full.js, defaults), as in
# /work/shared/fixtures/sdk-requests/web-js-v4.3.1-full-default.jsonl.
WEB_COMMON: dict[str, Any] = {
    "appVersion": "1.0.0",
    "dataSourceId": "a1b2c3d4e5f60718",
    "domain": "shop.example.com",
    "language": "en-US",
    "path": "/index.html",
    "platform": "web",
    "query": "utm_source=trk&q=1",
    "referralPage": "http://referrer.example/landing?x=1",
    "screenHeight": 720,
    "screenWidth": 1280,
    "sdkVersion": "4.3.1",
    "timezoneOffset": -480,
    "title": "Shop home",
}
WEB_TEMPLATES: list[dict[str, Any]] = [
    {"eventType": "VISIT", **WEB_COMMON},
    {"eventType": "PAGE", **WEB_COMMON, "protocolType": "https"},
    {
        "eventType": "VIEW_CLICK",
        "xpath": "/button",
        "xcontent": "/#buy-btn",
        "textValue": "Buy now",
        **WEB_COMMON,
    },
    {
        "eventType": "CUSTOM",
        "eventName": "web_buy",
        **WEB_COMMON,
        "attributes": {"price": "9.9", "qty": "2", "tags": "a||b", "zh": "中文"},
    },
]
# Template index of each event of a 50-event web batch: a visit, then pages, clicks, customs.
WEB_PATTERN = [0] + [1 if i % 5 == 0 else 2 if i % 5 in (1, 2) else 3 for i in range(1, 50)]

# Node: build the web batches from the templates and compress each one with npm lz-string;
# the spec comes on stdin, the bodies go to spec.out, each after its length (4 bytes, BE).
NODE_WEB = r"""
const fs = require('fs');
const spec = JSON.parse(fs.readFileSync(0, 'utf8'));
const lz = require(spec.lz);
const out = fs.openSync(spec.out, 'w');
const pad = (n) => String(n).padStart(12, '0');
for (let k = spec.first; k < spec.first + spec.count; k++) {
  const dev = k % spec.devices;
  const device = '5f0e1c2a-7b3d-4e6f-8a9b-' + pad(dev);
  const session = '9c8b7a6d-5e4f-4a3b-8c2d-' + pad(k);
  const events = [];
  for (let i = 0; i < spec.pattern.length; i++) {
    const ev = Object.assign({}, spec.templates[spec.pattern[i]]);
    ev.deviceId = device;
    ev.sessionId = session;
    ev.timestamp = spec.t0 + i;
    ev.eventSequenceId = k * spec.pattern.length + i;  // unique in the run: no re-send
    events.push(ev);
  }
  const body = Buffer.from(lz.compressToUint8Array(JSON.stringify(events)));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  fs.writeSync(out, len);
  fs.writeSync(out, body);
}
fs.closeSync(out);
"""

# wrk: thread n sends the requests of FILE-n.bin (lengths in FILE-n.idx) in order, once each;
# when they are used up it stops (and sends GET /healthz, which acknowledges no event, until
# it has). The answers' x-rawexport-accepted / -rejected headers are added up.
WRK_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")
local function now_us()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000000 + tonumber(tv.tv_usec)
end

local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

local reqs = {}
local fallback = ""
local next_req = 0
used = 0; accepted = 0; rejected = 0; bad = 0; first_bad = ""
started_at = 0; out_at = 0

function init(args)
  local prefix = args[1]
  local data = assert(io.open(prefix .. id .. ".bin", "rb"))
  for line in io.lines(prefix .. id .. ".idx") do
    reqs[#reqs + 1] = data:read(tonumber(line))
  end
  data:close()
  fallback = "GET /healthz HTTP/1.1\r\nHost: " .. args[2] .. "\r\n\r\n"
end

function request()
  if started_at == 0 then started_at = now_us() end
  next_req = next_req + 1
  local r = reqs[next_req]
  if r == nil then
    if out_at == 0 then
      out_at = now_us()
      wrk.thread:stop()
    end
    return fallback
  end
  reqs[next_req] = nil
  used = used + 1
  return r
end

function response(status, headers, body)
  local a = headers["x-rawexport-accepted"]
  if a then accepted = accepted + tonumber(a) end
  local r = headers["x-rawexport-rejected"]
  if r then rejected = rejected + tonumber(r) end
  if status < 200 or status > 299 or (r and tonumber(r) > 0) then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 400) end
  end
end

local function hex(s)
  return (string.gsub(s, ".", function(c) return string.format("%02x", string.byte(c)) end))
end

function done(summary, latency, requests)
  local t = {used = 0, accepted = 0, rejected = 0, bad = 0, first_bad = "", all_out = 1,
             first = 0, last_out = 0}
  for _, th in ipairs(threads) do
    t.used = t.used + th:get("used")
    t.accepted = t.accepted + th:get("accepted")
    t.rejected = t.rejected + th:get("rejected")
    t.bad = t.bad + th:get("bad")
    if t.first_bad == "" then t.first_bad = th:get("first_bad") end
    local s, o = th:get("started_at"), th:get("out_at")
    if s > 0 and (t.first == 0 or s < t.first) then t.first = s end
    if o == 0 then t.all_out = 0 elseif o > t.last_out then t.last_out = o end
  end
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d," ..
    "\"non2xx\":%d,\"errors\":%d,\"used\":%d,\"accepted\":%d,\"rejected\":%d,\"bad\":%d," ..
    "\"first_bad_hex\":\"%s\",\"all_out\":%d,\"out_us\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, t.used, t.accepted, t.rejected,
    t.bad, hex(t.first_bad), t.all_out, t.last_out - t.first))
end
"""


# ---- requests ---------------------------------------------------------------------------


def http_request(
    port: int, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> bytes:
    """One HTTP/1.1 request, as it goes on the wire."""
    head = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if method == "POST":
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class Sample:
    """One request of a path, sent alone before the load to check the server's answer."""

    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Batches:
    """Pre-built requests of one path: a sample to check, then one list per load run."""

    sample: list[Sample] = field(default_factory=list)
    runs: list[list[bytes]] = field(default_factory=list)
    note: str = ""  # what the sample's body decodes to, when it is not plain text


class Sequence:
    """Hands out body numbers: every event of the run gets its own (no re-sends)."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, n: int) -> int:
        first = self.next
        self.next += n
        return first


def now_ms() -> int:
    return int(time.time() * 1000)


def lz_string_dir() -> Path | None:
    for p in (
        HERE.parent / ".venv/js/node_modules/lz-string",
        Path("/tmp/lz/node_modules/lz-string"),
    ):
        if (p / "package.json").is_file():
            return p
    return None


def web_bodies(root: Path, first: int, count: int, t0: int) -> list[bytes]:
    """`count` web batches (50 events), compressed by npm lz-string in node processes."""
    lz = lz_string_dir()
    node = shutil.which("node")
    if lz is None or node is None:
        raise RuntimeError("node and npm lz-string are needed (make js-deps)")
    script = root / "web_bodies.js"
    script.write_text(NODE_WEB)
    workers = max(1, min(os.cpu_count() or 1, 4, count))
    share = -(-count // workers)
    jobs = []
    for w in range(workers):
        n = min(share, count - w * share)
        if n <= 0:
            break
        out = root / f"web-bodies-{w}.bin"
        spec = {
            "lz": str(lz),
            "out": str(out),
            "first": first + w * share,
            "count": n,
            "devices": DEVICES,
            "t0": t0,
            "templates": WEB_TEMPLATES,
            "pattern": WEB_PATTERN,
        }
        jobs.append((out, spec))

    def one(job: tuple[Path, dict[str, Any]]) -> list[bytes]:
        out, spec = job
        # bounded: a few ms a body; an hour is far past any sane count
        done = subprocess.run(
            [node, str(script)], input=json.dumps(spec).encode(), capture_output=True, timeout=3600
        )
        if done.returncode:
            raise RuntimeError(f"node failed: {done.stderr.decode()[-2000:]}")
        data = out.read_bytes()
        out.unlink()
        bodies, pos = [], 0
        while pos < len(data):
            (n,) = struct.unpack_from(">I", data, pos)
            bodies.append(data[pos + 4 : pos + 4 + n])
            pos += 4 + n
        return bodies

    with ThreadPoolExecutor(len(jobs)) as pool:
        parts = list(pool.map(one, jobs))
    bodies = [b for part in parts for b in part]
    if len(bodies) != count:
        raise RuntimeError(f"node made {len(bodies)} web bodies, not {count}")
    return bodies


def web_sample_json(first: int, t0: int) -> list[dict[str, Any]]:
    """The events of web body `first` (what node compresses), for the printed sample."""
    events = []
    for i, t in enumerate(WEB_PATTERN):
        ev = dict(WEB_TEMPLATES[t])
        ev["deviceId"] = f"5f0e1c2a-7b3d-4e6f-8a9b-{first % DEVICES:012d}"
        ev["sessionId"] = f"9c8b7a6d-5e4f-4a3b-8c2d-{first:012d}"
        ev["timestamp"] = t0 + i
        ev["eventSequenceId"] = first * len(WEB_PATTERN) + i
        events.append(ev)
    return events


def build_web(root: Path, ai: str, seq: Sequence, counts: list[int]) -> Batches:
    t0 = now_ms()
    total = 1 + sum(counts)
    first = seq.take(total)
    bodies = web_bodies(root, first, total, t0)
    headers = {"User-Agent": CHROME_UA, "Origin": "https://shop.example.com"}
    targets = [f"/v3/projects/{ai}/collect?stm={t0 + k}&compress=1" for k in range(total)]
    note = json.dumps(web_sample_json(first, t0), ensure_ascii=False)
    note = f"lz-string compressToUint8Array of {note[:400]}... ({len(note)} chars)"
    return split(Batches(note=note), targets, [headers] * total, bodies, counts)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_str(number: int, value: str) -> bytes:
    raw = value.encode()
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _pb_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _pb_msg(number: int, raw: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


GO_NAMES = ("go_buy", "go_view", "go_add_to_cart")
XOR = [bytes(i ^ k for i in range(256)) for k in range(256)]
GO_ATTRIBUTES = {"price": "9.9", "qty": "2", "vip": "true", "tags": "a||b", "zh": "中文"}
# the attributes map as its encoded EventV3Dto field 24 entries (the same for every event)
GO_ATTRS = b"".join(_pb_msg(24, _pb_str(1, k) + _pb_str(2, v)) for k, v in GO_ATTRIBUTES.items())


def go_event(ai: str, n: int, at: int) -> bytes:
    """One EventV3Dto of the Go SDK (as in go-single.jsonl): a CUSTOM event, hand-encoded."""
    return (
        _pb_str(1, f"go-dev-{n % 5000}")
        + _pb_str(2, f"go-user-{n % 2000}")
        + _pb_str(5, "ds-go-01")
        + _pb_int(6, 1)  # CUSTOM
        + _pb_str(7, "go")
        + _pb_int(8, at)
        + _pb_int(15, n % 2_000_000_000)  # eventSequenceId: unique in the run, no re-send
        + _pb_str(19, "1.0.1")
        + _pb_str(22, GO_NAMES[n % 3])
        + GO_ATTRS
        + _pb_str(53, ai)
        + _pb_int(54, at)
    )


def go_body(ai: str, first_event: int, batch: int, t0: int, stm: int) -> bytes:
    import cramjam

    raw = b"".join(_pb_msg(1, go_event(ai, first_event + i, t0 + i)) for i in range(batch))
    return bytes(cramjam.snappy.compress_raw(raw)).translate(XOR[stm & 0xFF])


def build_go(ai: str, seq: Sequence, counts: list[int], batch: int = 500) -> Batches:
    t0 = now_ms()
    total = 1 + sum(counts)
    first = seq.take(total)
    headers = {
        "User-Agent": "Go-http-client/1.1",
        "Content-Type": "application/protobuf",
        "X-Compress-Codec": "2",
        "X-Crypt-Codec": "1",
    }
    targets, bodies = [], []
    for k in range(total):
        stm = t0 + k
        targets.append(f"/v3/projects/{ai}/collect?stm={stm}")
        bodies.append(go_body(ai, (first + k) * batch, batch, t0, stm))
    note = check_go_body(bodies[0], t0, batch, first * batch) or (
        f"XOR {t0 & 0xFF} -> snappy raw block -> EventV3List of {batch} CUSTOM events, the "
        f"first: {go_event(ai, first * batch, t0)!r}"
    )
    return split(Batches(note=note), targets, [headers] * total, bodies, counts)


def check_go_body(body: bytes, stm: int, batch: int, first_event: int) -> str | None:
    """The Go body read back with growingio-tracker's own protobuf module, when installed."""
    try:
        import cramjam
        from growingio_tracker_protobuf import event_v3_pb2
    except ImportError:
        return None
    raw = bytes(cramjam.snappy.decompress_raw(body.translate(XOR[stm & 0xFF])))
    msg = event_v3_pb2.EventV3List()
    msg.ParseFromString(raw)
    v = msg.values
    if len(v) != batch or v[0].event_name != GO_NAMES[first_event % 3] or v[0].project_key == "":
        return f"BENCH BUG: {len(msg.values)} events, the first {msg.values[:1]}"
    first = str(msg.values[0]).replace("\n", " ")
    return f"XOR {stm & 0xFF} -> snappy raw -> EventV3List of {batch}, the first: {first}"


def saas_body(first_body: int, batch: int, t0: int, kind: str) -> bytes:
    import orjson

    dev = first_body % DEVICES
    u = f"6c2b1e9a-0d4f-4c3b-9a8e-{dev:012d}"
    s = f"1e2d3c4b-5a69-4788-97a6-{first_body:012d}"
    events: list[dict[str, Any]] = []
    for i in range(batch):
        n = first_body * batch + i  # unique in the run: no re-send
        tm = t0 + i
        if kind == "pv" and i == 0:
            events.append(
                {
                    "t": "vst",
                    "u": u,
                    "s": s,
                    "tm": tm,
                    "d": "com.example.shop",
                    "p": "MainActivity",
                    "ch": "google",
                    "av": "2.9.0",
                    "b": "android",
                    "osv": "12",
                    "dm": "Pixel 6",
                    "sh": 2400,
                    "sw": 1080,
                    "l": "en_US",
                    "esid": n,
                }
            )
        elif kind == "pv":
            events.append(
                {
                    "t": "page",
                    "u": u,
                    "s": s,
                    "tm": tm,
                    "p": f"/a/{i % 7}",
                    "d": "com.example.shop",
                    "tl": "Title",
                    "gesid": n,
                    "esid": n,
                }
            )
        else:
            events.append(
                {
                    "t": "cstm",
                    "u": u,
                    "s": s,
                    "tm": tm,
                    "n": ("buy", "view")[i % 2],
                    "var": {"k": "v", "price": "9.9"},
                    "cs1": f"u{dev}",
                    "p": "/a/0",
                    "gesid": n,
                }
            )
    return orjson.dumps(events)


def build_saas(ai: str, seq: Sequence, counts: list[int], batch: int = 50) -> Batches:
    t0 = now_ms()
    total = 2 + sum(counts)  # two samples: pv and cstm
    first = seq.take(total)
    headers = {"User-Agent": ANDROID_UA, "Content-Type": "application/json"}
    targets, bodies = [], []
    for k in range(total):
        kind = ("pv", "cstm")[k % 2]
        targets.append(f"/v3/{ai}/android/{kind}?stm={t0 + k}")
        bodies.append(saas_body(first + k, batch, t0, kind))
    return split(Batches(), targets, [headers] * total, bodies, counts, samples=2)


def native_body(first_event: int, batch: int, t0: int) -> bytes:
    lines = []
    for i in range(batch):
        n = first_event + i
        lines.append(
            f'{{"type":"custom_event","visitUserId":"visitor-{n % 50_000:08d}",'
            f'"sessionId":"session-{n % 9_000:06d}","time":{t0 + i},'
            f'"eventName":"{("purchase", "view_item", "add_to_cart")[n % 3]}",'
            f'"eventVariable":{{"k":"v","price":"9.9","seq":"{n}"}},'
            f'"loginUserId":"user-{n % 20_000}"}}'
        )
    return ("\n".join(lines) + "\n").encode()


def build_native(ai: str, seq: Sequence, counts: list[int], batch: int) -> Batches:
    t0 = now_ms()
    total = 1 + sum(counts)
    first = seq.take(total)
    headers = {"Content-Type": "application/x-ndjson"}
    target = f"/api/v1/projects/{ai}/events"
    bodies = [native_body((first + k) * batch, batch, t0) for k in range(total)]
    return split(Batches(), [target] * total, [headers] * total, bodies, counts)


def split(
    out: Batches,
    targets: list[str],
    headers: list[dict[str, str]],
    bodies: list[bytes],
    counts: list[int],
    samples: int = 1,
) -> Batches:
    """The first `samples` requests as samples, the others cut into runs of `counts`."""
    out.sample = [Sample(targets[k], headers[k], bodies[k]) for k in range(samples)]
    port = PORT[0]
    pos = samples
    for c in counts:
        out.runs.append(
            [
                http_request(port, "POST", targets[k], headers[k], bodies[k])
                for k in range(pos, pos + c)
            ]
        )
        pos += c
    return out


PORT = [0]  # the server's port, for the Host header of the pre-built requests
CLIENT = ["auto"]  # --client: auto (wrk when installed), wrk, asyncio


# ---- load --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One load run's figures."""

    tool: str
    seconds: float  # the run's duration (to the last request when it used them all)
    requests: int  # pre-built requests sent
    accepted: int  # events acknowledged (x-rawexport-accepted)
    rejected: int
    bad: int  # non-2xx answers, answers with rejected events, socket errors
    first_bad: str
    p50_ms: float
    p99_ms: float
    ran_out: bool

    @property
    def events_per_s(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


def write_requests(prefix: Path, requests: list[bytes], parts: int) -> None:
    """FILE-n.bin / FILE-n.idx: the requests dealt round-robin over `parts` files."""
    for n in range(parts):
        mine = requests[n::parts]
        (prefix.parent / f"{prefix.name}{n}.bin").write_bytes(b"".join(mine))
        (prefix.parent / f"{prefix.name}{n}.idx").write_text("".join(f"{len(r)}\n" for r in mine))


def remove_requests(prefix: Path, parts: int) -> None:
    for n in range(parts):
        for ext in ("bin", "idx"):
            (prefix.parent / f"{prefix.name}{n}.{ext}").unlink(missing_ok=True)


def run_load(
    root: Path,
    name: str,
    port: int,
    requests: list[bytes],
    seconds: float,
    connections: int,
    rate: float = 0.0,
) -> Run:
    """Send `requests` (each once) over `connections` keep-alive connections for `seconds`;
    with `rate`, on a schedule of that many requests/s (the asyncio client's open loop)."""
    prefix = root / f"{name}-"
    wrk = shutil.which("wrk") if CLIENT[0] != "asyncio" and not rate else None
    parts = WRK_THREADS if wrk else 1
    write_requests(prefix, requests, parts)
    try:
        if wrk:
            return _run_wrk(wrk, root, prefix, port, seconds, connections)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--load-client",
            str(prefix),
            "--port",
            str(port),
            "--seconds",
            str(seconds),
            "--connections",
            str(connections),
            "--rate",
            str(rate),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
        found = [x for x in out.stdout.splitlines() if x.startswith("LOADJSON ")]
        if out.returncode or not found:
            raise SystemExit(f"load client failed: {out.stdout}\n{out.stderr}")
        return Run(**json.loads(found[-1].removeprefix("LOADJSON ")))
    finally:
        remove_requests(prefix, parts)


def _run_wrk(
    wrk: str, root: Path, prefix: Path, port: int, seconds: float, connections: int
) -> Run:
    script = root / "collect.lua"
    script.write_text(WRK_SCRIPT)
    threads = max(1, min(WRK_THREADS, connections))
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/",
        "--",
        str(prefix),
        f"127.0.0.1:{port}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    found = [x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")]
    if out.returncode or not found:
        raise SystemExit(f"wrk failed: {out.stdout}\n{out.stderr}")
    r = json.loads(found[-1].removeprefix("WRKJSON "))
    ran_out = bool(r["all_out"])
    secs = (r["out_us"] if ran_out and r["out_us"] > 0 else r["duration_us"]) / 1e6
    return Run(
        tool="wrk",
        seconds=secs,
        requests=r["used"],
        accepted=r["accepted"],
        rejected=r["rejected"],
        bad=r["bad"] + r["errors"],
        first_bad=bytes.fromhex(r["first_bad_hex"]).decode("utf-8", "replace"),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        ran_out=ran_out,
    )


async def _client(
    prefix: Path, port: int, seconds: float, connections: int, rate: float = 0.0
) -> Run:
    """wrk's job in asyncio, as cheap as it goes: raw streams and pre-built requests.

    With `rate` (requests/s in all), each connection sends on a schedule instead of as fast
    as answers come (an open loop), and a request's latency counts from when it was due,
    so a slow answer that delays the next send is not hidden (no coordinated omission)."""
    data = (prefix.parent / f"{prefix.name}0.bin").read_bytes()
    requests, pos = [], 0
    for line in (prefix.parent / f"{prefix.name}0.idx").read_text().split():
        requests.append(data[pos : pos + int(line)])
        pos += int(line)
    del data
    it: Iterator[bytes] = iter(requests)
    latencies: list[float] = []
    c = {"sent": 0, "accepted": 0, "rejected": 0, "bad": 0, "out_at": 0.0}
    first_bad: list[str] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        interval = connections / rate if rate > 0 else 0.0
        due = start + interval * n / connections
        try:
            while time.perf_counter() < deadline:
                if interval:
                    wait = due - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                req = next(it, None)
                if req is None:
                    c["out_at"] = c["out_at"] or time.perf_counter()
                    return
                c["sent"] += 1
                t = due if interval else time.perf_counter()
                due += interval
                writer.write(req)
                status_line = await reader.readline()
                length = 0
                acc = rej = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    name = name.lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "x-rawexport-accepted":
                        acc = int(value)
                    elif name == "x-rawexport-rejected":
                        rej = int(value)
                body = await reader.readexactly(length)
                latencies.append(time.perf_counter() - t)
                c["accepted"] += acc
                c["rejected"] += rej
                parts = status_line.split(b" ")
                if len(parts) < 2 or parts[1][:1] != b"2" or rej:
                    c["bad"] += 1
                    if not first_bad:
                        first_bad.append(f"{status_line.decode().strip()} {body[:400]!r}")
        finally:
            writer.close()

    results = await asyncio.gather(*(one(n) for n in range(connections)), return_exceptions=True)
    errors = sum(1 for x in results if isinstance(x, BaseException))
    end = c["out_at"] if c["out_at"] else time.perf_counter()
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    return Run(
        tool="asyncio client",
        seconds=end - start,
        requests=int(c["sent"]),
        accepted=int(c["accepted"]),
        rejected=int(c["rejected"]),
        bad=int(c["bad"]) + errors,
        first_bad=first_bad[0] if first_bad else "",
        p50_ms=pct(0.5),
        p99_ms=pct(0.99),
        ran_out=bool(c["out_at"]),
    )


def load_client_main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    run = asyncio.run(
        _client(Path(args.load_client), args.port, args.seconds, args.connections, args.rate)
    )
    print("LOADJSON " + json.dumps(run.__dict__), flush=True)


# ---- checks ------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def send(port: int, sample: Sample) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", sample.target, sample.body, sample.headers)
        r = conn.getresponse()
        return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def describe(sample: Sample, answer: Answer | None, note: str = "") -> str:
    b64 = base64.b64encode(sample.body).decode()
    lines = [
        f"  request: POST {sample.target}",
        f"  headers: {sample.headers}",
        f"  body: {len(sample.body)} bytes, base64 {b64[:240]}{'...' if len(b64) > 240 else ''}",
    ]
    if note:
        lines.append(f"  body decodes to: {note}")
    if answer is not None:
        lines.append(f"  answer: HTTP {answer.status} {answer.headers}")
        lines.append(f"  answer body: {answer.body[:600]!r}")
    return "\n".join(lines)


def check(port: int, label: str, sample: Sample, events: int, note: str = "") -> tuple[str, int]:
    """(problem or "", events acknowledged) for one sample request."""
    try:
        a = send(port, sample)
    except OSError as e:
        return f"{label}: no answer ({e})\n{describe(sample, None, note)}", 0
    acc, rej = a.headers.get("x-rawexport-accepted"), a.headers.get("x-rawexport-rejected")
    ok = 200 <= a.status < 300 and acc == str(events) and rej == "0"
    report: Any = None
    if a.status == 200:
        try:
            report = json.loads(a.body)
        except ValueError:
            ok = False
        else:
            ok = ok and report.get("accepted") == events and report.get("rejected") == []
            ok = ok and not report.get("duplicates")
    expect = 204 if "/v3/projects/" in sample.target else 200
    ok = ok and a.status == expect
    if ok:
        return "", events
    want = f"HTTP {expect}, {events} accepted, 0 rejected"
    return f"{label}: expected {want}\n{describe(sample, a, note)}", int(acc or 0)


# ---- the bench ---------------------------------------------------------------------------


@dataclass
class Pair:
    """An SDK path and its native reference, best of the runs each."""

    key: str
    label: str
    batch: int
    mine: list[Run] = field(default_factory=list)
    native: list[Run] = field(default_factory=list)

    def best(self) -> tuple[Run, Run]:
        return (
            max(self.mine, key=lambda r: r.events_per_s),
            max(self.native, key=lambda r: r.events_per_s),
        )

    def worst_p99(self) -> float:
        return max(r.p99_ms for r in self.mine)


def say(run: Run, label: str) -> None:
    extra = []
    if run.ran_out:
        extra.append(f"used all {run.requests} pre-built requests after {run.seconds:.1f} s")
    if run.bad or run.rejected:
        extra.append(f"{run.bad} bad answers, {run.rejected} rejected events: {run.first_bad!r}")
    more = f"  [{'; '.join(extra)}]" if extra else ""
    print(
        f"  {label:<34} {run.events_per_s:>11,.0f} events/s  {run.requests / run.seconds:>7,.0f} "
        f"req/s  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms  ({run.tool}){more}",
        flush=True,
    )


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("rawexport_ingest_events_total{"):
            name, _, value = line.rpartition(" ")
            outcome = name.split('outcome="', 1)[1].split('"', 1)[0]
            out[outcome] = float(value)
    return out


def log_problems(log: Path, limit: int = 12) -> list[str]:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    words = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Exception")
    return [x for x in lines if any(w in x for w in words)][:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each load run")
    ap.add_argument("--repeat", type=int, default=1, help="load runs per path and reference")
    ap.add_argument("--connections", type=int, default=CONNECTIONS)
    ap.add_argument(
        "--max-requests",
        type=int,
        default=60_000,
        help="most requests built for one run (web bodies take node a few ms each)",
    )
    ap.add_argument(
        "--client",
        choices=["auto", "wrk", "asyncio"],
        default="auto",
        help="load client: wrk when installed (auto), or the asyncio client of this file",
    )
    ap.add_argument(
        "--only",
        action="append",
        choices=["web", "go", "saas"],
        help="measure only this SDK path (repeatable; default: all three)",
    )
    ap.add_argument("--dir", type=Path, default=Path("bench-data/collect"))
    ap.add_argument("--json", type=Path, help="append result objects (JSON lines) to FILE")
    ap.add_argument("--load-client", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument(
        "--pace",
        type=float,
        default=0.5,
        help="web latency run: requests/s as this share of the web path's measured rate",
    )
    args = ap.parse_args()
    if args.load_client:
        load_client_main(args)
        return
    root: Path = args.dir.resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    seconds = max(1.0, float(args.seconds))
    repeat = max(1, int(args.repeat))
    conns = max(1, int(args.connections))
    port = free_port()
    PORT[0] = port
    env = env_for(root / "home", port)  # log level warning
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), str(HERE.parent)) if p
    )
    ai = run_cli(["project", "create", "--name", "bench"], env)["ai"]
    log = root / "serve.log"
    CLIENT[0] = args.client
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed")
    wrk = args.client != "asyncio" and shutil.which("wrk")
    tool = "wrk" if wrk else "asyncio client (slower than wrk, shares the CPU with the server)"
    print(
        f"load: {tool}, {conns} connections; serve log {log}; load average {load_average()}",
        flush=True,
    )
    problems: list[str] = []
    seq = Sequence()
    acked = 0
    pairs = [
        Pair("web", "web JS 4.x, lz-string", 50),
        Pair("go", "Go protobuf+snappy+XOR", 500),
        Pair("saas", "SaaS Android JSON", 50),
    ]
    with Server(["serve"], env, port, log) as server:
        server.wait_ready()

        def calibrate(batch: int) -> float:
            """The native rate at this batch size (a warm-up, too): requests/s."""
            nonlocal acked
            cal = build_native(
                ai, seq, [min(args.max_requests, 8_000 if batch < 100 else 1_500)], batch
            )
            problem, n = check(port, f"native {batch}", cal.sample[0], batch)
            acked += n
            if problem:
                raise SystemExit(f"the native reference failed:\n{problem}\nserve log: {log}")
            run = run_load(root, f"cal{batch}", port, cal.runs[0], 2.0, conns)
            acked += run.accepted
            say(run, f"native {batch} (warm-up)")
            return run.requests / run.seconds

        rates = {50: calibrate(50), 500: calibrate(500)}

        def counts(batch: int) -> list[int]:
            per_run = int(rates[batch] * MARGIN * seconds) + 100
            warm = int(rates[batch] * MARGIN * 0.5) + 20
            return [min(args.max_requests, n) for n in [warm] + [per_run] * repeat]

        builders: dict[str, Callable[[], Batches]] = {
            "web": lambda: build_web(root, ai, seq, counts(50)),
            "go": lambda: build_go(ai, seq, counts(500)),
            "saas": lambda: build_saas(ai, seq, counts(50)),
        }
        for pair in pairs:
            if args.only and pair.key not in args.only:
                continue
            print(f"load average before {pair.label}: {load_average()}", flush=True)
            t = time.perf_counter()
            try:
                built = builders[pair.key]()
            except RuntimeError as e:
                problems.append(f"{pair.label}: not measured: {e}")
                print(f"{pair.label}: not measured: {e}", flush=True)
                continue
            n = sum(len(r) for r in built.runs)
            print(
                f"{pair.label}: {n:,} requests of {pair.batch} events built in "
                f"{time.perf_counter() - t:.1f} s",
                flush=True,
            )
            failed = False
            if built.note.startswith("BENCH BUG"):
                raise SystemExit(f"{pair.label}: {built.note}")
            for sample in built.sample:
                problem, got = check(port, pair.label, sample, pair.batch, built.note)
                acked += got
                if problem:
                    print(problem, flush=True)
                    problems.append(problem)
                    failed = True
            if failed:
                continue
            natives = build_native(ai, seq, counts(pair.batch), pair.batch)
            warm = run_load(root, f"{pair.key}-warm", port, built.runs[0], 1.0, conns)
            acked += warm.accepted
            print(f"{pair.label} vs native {pair.batch}-event batches:", flush=True)
            for r in range(repeat):
                ref = run_load(
                    root, f"native-{pair.key}-{r}", port, natives.runs[r + 1], seconds, conns
                )
                acked += ref.accepted
                say(ref, f"native NDJSON {pair.batch}")
                run = run_load(root, f"{pair.key}-{r}", port, built.runs[r + 1], seconds, conns)
                acked += run.accepted
                say(run, pair.label)
                for x in (ref, run):
                    if x.bad or x.rejected:
                        problems.append(
                            f"{pair.label} run {r}: {x.bad} bad answers, "
                            f"{x.rejected} rejected: {x.first_bad!r}"
                        )
                pair.native.append(ref)
                pair.mine.append(run)
            del built, natives
        web = pairs[0]
        if web.mine:
            rate = max(1.0, web.best()[0].requests / web.best()[0].seconds * args.pace)
            paced = build_web(root, ai, seq, [int(rate * seconds) + 100])
            native = build_native(ai, seq, [int(rate * seconds) + 100], 50)
            # the native reference first: the compaction the loads above left behind then
            # weighs on it, not on the path measured
            ref = run_load(root, "native-paced", port, native.runs[0], seconds, conns, rate=rate)
            acked += ref.accepted
            say(ref, f"native NDJSON 50, paced at {rate:,.0f} req/s")
            run = run_load(root, "web-paced", port, paced.runs[0], seconds, conns, rate=rate)
            acked += run.accepted
            say(run, f"web, paced at {rate:,.0f} req/s")
            PACED.extend([run, ref])
            PACED_RATE.append(rate)
        time.sleep(0.5)
        stored = metrics(port)
    # the server is stopped (SIGTERM, then SIGKILL after 20 s) by Server's exit
    accepted_metric = stored.get("accepted", 0.0)
    print(
        f"rawexport_ingest_events_total: {stored}; events acknowledged to the bench: {acked:,}",
        flush=True,
    )
    if accepted_metric > acked:
        print(
            f"  ({accepted_metric - acked:,.0f} more: requests in flight when a wrk run ended, "
            "answered after wrk stopped reading)",
            flush=True,
        )
    if accepted_metric < acked:
        problems.append(
            f"the server counts {accepted_metric:,.0f} accepted events, fewer than "
            f"the {acked:,} it acknowledged"
        )
    if stored.get("duplicate", 0.0) or stored.get("rejected", 0.0):
        problems.append(f"the server counted duplicates or rejections: {stored}")
    in_log = log_problems(log)
    if in_log:
        print(f"serve log ({log}) warnings and errors:\n  " + "\n  ".join(in_log), flush=True)

    figures = figure_rows(pairs, tool, conns, acked, accepted_metric)
    print()
    for f in figures:
        name, value, unit, reference, ref_value, ratio = f
        print(
            f"{name:<52} {value:>12,.2f} {unit:<9} {reference:<60} {ref_value:>12,.2f}  "
            f"{ratio:5.2f}x",
            flush=True,
        )
    if args.json:
        write_figures(args.json, "collect", figures)
    if problems:
        print(f"\nPROBLEMS (serve log: {log}):\n" + "\n".join(problems), flush=True)
        raise SystemExit(1)


PACED: list[Run] = []  # the web path's open-loop latency run
PACED_RATE: list[float] = []


def figure_rows(
    pairs: list[Pair], tool: str, conns: int, acked: int, accepted_metric: float
) -> list[Figure]:
    client = "wrk" if tool == "wrk" else "asyncio client"
    out: list[Figure] = []
    met, targets = [], 0
    for p in pairs:
        if not p.mine:
            continue
        mine, ref = p.best()
        ratio = mine.events_per_s / ref.events_per_s if ref.events_per_s else 0.0
        out.append(
            (
                f"{p.label} {p.batch}-event batches",
                mine.events_per_s,
                "events/s",
                f"native NDJSON {p.batch}-event batches ({client}, {conns} conn, paired)",
                ref.events_per_s,
                ratio,
            )
        )
        targets += 2
        met += [ratio >= TARGET_RATIO, mine.events_per_s >= TARGET_EVENTS]
        if p.key == "web":
            out.append(
                (
                    f"{p.label} {p.batch}-event batch p99, saturated",
                    p.worst_p99(),
                    "ms",
                    f"({client}, {conns} conn, as fast as answers come: queueing)",
                    TARGET_P99_MS,
                    p.worst_p99() / TARGET_P99_MS,
                )
            )
        if p.key == "web" and PACED:
            p99 = PACED[0].p99_ms
            out.append(
                (
                    f"{p.label} {p.batch}-event batch p99 at {PACED_RATE[0]:,.0f} req/s",
                    p99,
                    "ms",
                    f"target (asyncio client, {conns} conn, open loop)",
                    TARGET_P99_MS,
                    p99 / TARGET_P99_MS,
                )
            )
            out.append(
                (
                    f"{p.label} {p.batch}-event batch p50 at {PACED_RATE[0]:,.0f} req/s",
                    PACED[0].p50_ms,
                    "ms",
                    "native NDJSON 50-event batch p50, same rate (the durable write's own wait)",
                    PACED[1].p50_ms,
                    PACED[0].p50_ms / PACED[1].p50_ms if PACED[1].p50_ms else 0.0,
                )
            )
            out.append(
                (
                    f"{p.label} {p.batch}-event batch p99 at {PACED_RATE[0]:,.0f} req/s ",
                    p99,
                    "ms",
                    "native NDJSON 50-event batch p99, same rate",
                    PACED[1].p99_ms,
                    p99 / PACED[1].p99_ms if PACED[1].p99_ms else 0.0,
                )
            )
            targets += 1
            met.append(p99 <= TARGET_P99_MS)
    n = sum(met)
    out.append(
        (
            "targets met",
            float(n),
            "targets",
            f"SDK paths >= {TARGET_RATIO}x native and >= {TARGET_EVENTS:,.0f} events/s; "
            f"web p99 <= {TARGET_P99_MS:.0f} ms",
            float(targets),
            n / targets if targets else 0.0,
        )
    )
    out.append(
        (
            "events counted by the server (metrics, accepted)",
            accepted_metric,
            "events",
            "events acknowledged to the bench",
            float(acked),
            accepted_metric / acked if acked else 0.0,
        )
    )
    return out


if __name__ == "__main__":
    main()
