"""lz-string decompression (rawexport.ingest.lzstring) against npm lz-string 1.5.0 itself.

The reference is the real JS library, run by node as one long-lived process per session
(tests/ingest/lzstring_oracle.js, package from `make js-deps`); without node or the package
those tests fail, they do not skip.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rawexport.ingest.lzstring import decompress_uint8, decompress_uri, decompress_utf16

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "sdk-requests"
ORACLE_JS = Path(__file__).with_name("lzstring_oracle.js")
NODE_MODULES = REPO / ".venv" / "js" / "node_modules"

BIG = 1 << 30
MIB = 1 << 20
URI_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-$"

Form = Literal["uint8", "uri", "utf16"]
FORMS: tuple[Form, ...] = ("uint8", "uri", "utf16")
Data = bytes | str
DECODERS: dict[Form, Callable[[Any, int], bytes]] = {
    "uint8": decompress_uint8,
    "uri": decompress_uri,
    "utf16": decompress_utf16,
}

WORKED_TEXT = '[{"eventType":"VISIT","deviceId":"d1"}]'
WORKED_UINT8 = (
    "3686f0440a606e107602e015027801c260171806a0490194f44c0068c004da012c06308f0ab4a0463005f0174800"
)
WORKED_URI = "NobwRApgbhB2AuAVAngBwmAXGAagSQGU9EwAaMAE2gEsBjCPCrSgRjAF8BdIA"
WORKED_UTF16 = (
    "e1ada3 e3b0b1 c5ac dc81 cf90 e0aea0 e2a8a4 e7a0a1 e68590 d7a6 c3b4 d2b0 e0b387 e58590 "
    "c3b1 e480a4 e6b4a0 e4aca1 e498b1 e7838b e294a2 e1a3a0 e0b080 e19da8 20 20"
)


def norm(text: str) -> bytes:
    """A JS string (its UTF-16 code units) as the decoder answers it: UTF-8, pairs joined,
    lone surrogates in their 3-byte form."""
    units = text.encode("utf-16-le", "surrogatepass")
    return units.decode("utf-16-le", "surrogatepass").encode("utf-8", "surrogatepass")


# -- the reference ---------------------------------------------------------------------------


class Oracle:
    """npm lz-string 1.5.0 in one node process, answering one JSON line per request."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail(
                "node is not installed; the lz-string tests compare against npm lz-string: "
                "`make system-deps` installs nodejs and npm",
                pytrace=False,
            )
        package = NODE_MODULES / "lz-string" / "package.json"
        if not package.is_file():
            pytest.fail(
                f"npm lz-string is not installed in {NODE_MODULES}: run `make js-deps`",
                pytrace=False,
            )
        version = json.loads(package.read_text())["version"]
        if version != "1.5.0":
            pytest.fail(f"{package} is lz-string {version}, not 1.5.0", pytrace=False)
        self.proc = subprocess.Popen(
            [node, str(ORACLE_JS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail(f"the node oracle exited ({self.proc.poll()})", pytrace=False)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def compress(self, text: str) -> dict[Form, Data]:
        """The three wire forms of text: Uint8Array as bytes, the others as str."""
        got = self.ask({"text": text})
        return {"uint8": bytes.fromhex(got["uint8"]), "uri": got["uri"], "utf16": got["utf16"]}

    def decompress(self, form: Form, data: Data) -> str | None:
        """The JS result; None for null, and for a throw (odd-length Uint8Array)."""
        got = self.ask({form: data.hex() if isinstance(data, bytes) else data})
        result: str | None = got.get("result")
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture(scope="session")
def oracle() -> Iterator[Oracle]:
    o = Oracle()
    yield o
    o.close()


def first_token_is_3(form: Form, data: Data) -> bool:
    """Streams opening with token 3, which the JS runs on with `undefined` and we refuse."""
    if not data:
        return False
    if isinstance(data, bytes):
        return form == "uint8" and len(data) >= 2 and data[0] >= 0xC0
    if form == "uri":
        return (62 if data[0] == " " else URI_ALPHABET.index(data[0]) & 63) >= 48
    return ord(data[0]) - 32 >= 0x6000


def check_like_js(oracle: Oracle, form: Form, data: Data) -> None:
    """Ours equals the JS wherever the JS decodes to a complete string; ValueError otherwise."""
    js = oracle.decompress(form, data)
    try:
        got = DECODERS[form](data, BIG)
    except ValueError:
        assert js in (None, "") or first_token_is_3(form, data), (data, js)
        return
    assert js is not None, (data, got)
    assert got == norm(js), data


# -- hand-made streams -----------------------------------------------------------------------


def pack(tokens: list[tuple[int, int]], width: int) -> list[int]:
    """(value, bits) tokens as `width`-bit values, each token low bit first, each value
    filled from its top bit: how the JS reads them. Zero-padded."""
    bits = [(value >> i) & 1 for value, n in tokens for i in range(n)]
    bits += [0] * (-len(bits) % width)
    return [
        sum(bit << (width - 1 - k) for k, bit in enumerate(bits[i : i + width]))
        for i in range(0, len(bits), width)
    ]


def uint8_stream(tokens: list[tuple[int, int]]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in pack(tokens, 16))


def stream(tokens: list[tuple[int, int]], form: Form) -> Data:
    if form == "uint8":
        return uint8_stream(tokens)
    if form == "uri":
        return "".join(URI_ALPHABET[v] for v in pack(tokens, 6))
    return "".join(chr(v + 32) for v in pack(tokens, 15)) + " "


def repeated(char: str, tokens: int) -> list[tuple[int, int]]:
    """char repeated (tokens + 1)(tokens + 2) / 2 times: one literal, then each token the
    entry being defined (w + w[0]), each one longer: as lz-string compresses a run."""
    out = [(0, 2), (ord(char), 8)]
    num_bits, enlarge_in, dict_size = 3, 4, 4
    for _ in range(tokens):
        out.append((dict_size, num_bits))
        dict_size += 1
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in, num_bits = 1 << num_bits, num_bits + 1
    return [*out, (2, num_bits)]


def run_length(tokens: int) -> int:
    return (tokens + 1) * (tokens + 2) // 2


# -- worked examples and real requests -------------------------------------------------------


def test_worked_examples() -> None:
    want = WORKED_TEXT.encode()
    assert decompress_uint8(bytes.fromhex(WORKED_UINT8), 1000) == want
    assert decompress_uint8(bytearray.fromhex(WORKED_UINT8), 1000) == want
    assert decompress_uint8(memoryview(bytes.fromhex(WORKED_UINT8)), limit=1000) == want
    assert decompress_uri(WORKED_URI, 1000) == want
    assert decompress_uri(WORKED_URI.encode(), 1000) == want
    utf16 = bytes.fromhex(WORKED_UTF16.replace(" ", ""))
    assert decompress_utf16(utf16, 1000) == want
    assert decompress_utf16(utf16.decode(), 1000) == want


def test_worked_examples_are_what_lz_string_writes(oracle: Oracle) -> None:
    forms = oracle.compress(WORKED_TEXT)
    assert forms["uint8"] == bytes.fromhex(WORKED_UINT8)
    assert forms["uri"] == WORKED_URI
    assert forms["utf16"] == bytes.fromhex(WORKED_UTF16.replace(" ", "")).decode()


def web_compressed_requests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{n}", r)
        for path in sorted(FIXTURES.glob("*.jsonl"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if (r := json.loads(line))["method"] == "POST" and "compress=1" in r["path"]
    ]


def test_web_sdk_bodies_decode_to_json_arrays() -> None:
    requests = web_compressed_requests()
    assert requests, f"no web SDK request with compress=1 in {FIXTURES}"
    for name, r in requests:
        events = json.loads(decompress_uint8(base64.b64decode(r["body_b64"]), MIB))
        assert isinstance(events, list), name
        # the events the fixture lists (read with npm lz-string when captured)
        assert [e["eventType"] for e in events] == [e["event_type"] for e in r["sent_events"]], name


# -- against npm lz-string ------------------------------------------------------------------

REPETITIVE = st.builds(
    lambda parts, n: "".join(parts) * n,
    st.lists(st.text(max_size=6), max_size=8),
    st.integers(1, 300),
)


def check_round_trip(oracle: Oracle, text: str) -> None:
    want = norm(text)
    forms = oracle.compress(text)
    for form in FORMS:
        data = forms[form]
        decode = DECODERS[form]
        assert decode(data, BIG) == want, form
        # the limit counts UTF-8 bytes exactly
        assert decode(data, len(want)) == want, form
        if want:
            with pytest.raises(OverflowError):
                decode(data, len(want) - 1)
        if isinstance(data, str):
            assert decode(data.encode("utf-8"), BIG) == want, form
    uri = forms["uri"]
    assert isinstance(uri, str)
    # a form-decoded query turns '+' into a space
    assert decompress_uri(uri.replace("+", " "), BIG) == want


@given(st.text() | REPETITIVE)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_hypothesis(oracle: Oracle, text: str) -> None:
    check_round_trip(oracle, text)


@given(st.text(st.characters(categories=["Cs", "Lo", "So", "Ll"])))
@settings(max_examples=100, deadline=None)
def test_round_trip_lone_surrogates_hypothesis(oracle: Oracle, text: str) -> None:
    check_round_trip(oracle, text)


@pytest.mark.parametrize(
    "text",
    ["", "a", "😀", "\ud83d", "\ude00\ud83d", "x\ud83d", "\x00\x01\xff\u0100\uffff", "ab" * 5000],
)
def test_round_trip_examples(oracle: Oracle, text: str) -> None:
    check_round_trip(oracle, text)


@given(st.binary(max_size=80))
@settings(max_examples=500, deadline=None)
def test_garbage_uint8_like_js_hypothesis(oracle: Oracle, data: bytes) -> None:
    check_like_js(oracle, "uint8", data)


@given(st.text(URI_ALPHABET + " ", max_size=120))
@settings(max_examples=300, deadline=None)
def test_garbage_uri_like_js_hypothesis(oracle: Oracle, data: str) -> None:
    check_like_js(oracle, "uri", data)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x801F), max_size=60))
@settings(max_examples=300, deadline=None)
def test_garbage_utf16_like_js_hypothesis(oracle: Oracle, data: str) -> None:
    check_like_js(oracle, "utf16", data)


@given(st.text(min_size=1), st.sampled_from(FORMS), st.data())
@settings(max_examples=300, deadline=None)
def test_damaged_streams_like_js_hypothesis(
    oracle: Oracle, text: str, form: Form, data: st.DataObject
) -> None:
    """Real streams cut short, cut at their zero padding, or with one value changed."""
    good = oracle.compress(text)[form]
    values: list[int] = (
        [int.from_bytes(good[i : i + 2], "big") for i in range(0, len(good), 2)]
        if isinstance(good, bytes)
        else [URI_ALPHABET.index(c) if form == "uri" else ord(c) - 32 for c in good]
    )
    how = data.draw(st.sampled_from(["cut", "unpad", "change"]))
    if how == "cut":
        values = values[: data.draw(st.integers(1, len(values)))]
    elif how == "unpad":
        while len(values) > 1 and values[-1] == 0:
            values.pop()
    else:
        i = data.draw(st.integers(0, len(values) - 1))
        values[i] = data.draw(st.integers(0, {"uint8": 0xFFFF, "uri": 63, "utf16": 0x7FFF}[form]))
    damaged: Data
    if form == "uint8":
        damaged = b"".join(v.to_bytes(2, "big") for v in values)
    elif form == "uri":
        damaged = "".join(URI_ALPHABET[v] for v in values)
    else:
        damaged = "".join(chr(v + 32) for v in values)
    check_like_js(oracle, form, damaged)


def test_hand_made_streams_like_js(oracle: Oracle) -> None:
    cases: list[tuple[list[tuple[int, int]], bytes | type[ValueError]]] = [
        ([(0, 2), (97, 8), (2, 3)], b"a"),
        ([(2, 2)], b""),  # the empty string
        ([(0, 2), (97, 8), (4, 3), (2, 3)], b"aaa"),  # the entry being defined: w + w[0]
        ([(0, 2), (97, 8), (5, 3), (2, 3)], ValueError),  # an entry not defined yet
        ([(0, 2), (97, 8)], ValueError),  # no end marker
        ([(3, 2), (0, 3), (97, 8), (2, 3)], ValueError),  # first token 3
        # the end marker's last bits past the end of the input: read as zeros
        ([(0, 2), (97, 8), *[(3, 3)] * 4, (3, 4), (3, 4), (2, 2)], b"a" * 7),
        # surrogates from 16-bit literals: a pair across two entries, and the other way round
        ([(1, 2), (0xD83D, 16), (1, 3), (0xDE00, 16), (2, 3)], "😀".encode()),
        ([(1, 2), (0xDE00, 16), (1, 3), (0xD83D, 16), (2, 3)], b"\xed\xb8\x80\xed\xa0\xbd"),
        (repeated("a", 200), b"a" * run_length(200)),
    ]
    for tokens, want in cases:
        for form in FORMS:
            data = stream(tokens, form)
            check_like_js(oracle, form, data)
            if isinstance(want, bytes):
                assert DECODERS[form](data, BIG) == want, (tokens, form)
                assert DECODERS[form](data, len(want)) == want
                if want:
                    with pytest.raises(OverflowError):
                        DECODERS[form](data, len(want) - 1)
            else:
                with pytest.raises(want):
                    DECODERS[form](data, BIG)
    # the end marker past the end really is past it
    assert len(uint8_stream(cases[6][0])) == 4


def test_a_run_is_what_lz_string_writes(oracle: Oracle) -> None:
    assert oracle.compress("a" * run_length(300))["uint8"] == uint8_stream(repeated("a", 300))


# -- bounds ---------------------------------------------------------------------------------

# The peak resident set of the probe's own process: VmHWM, not getrusage's ru_maxrss, which
# on Linux a child inherits from its parent at exec (it would read pytest's peak).
BOUND_PROBE = """
import sys, time
from rawexport.ingest.lzstring import decompress_uint8, decompress_uri, decompress_utf16
def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
decode = {"uint8": decompress_uint8, "uri": decompress_uri, "utf16": decompress_utf16}
form, data = sys.argv[1], sys.stdin.buffer.read()
before = peak_kib()
start = time.perf_counter()
try:
    decode[form](data, 1 << 20)
except OverflowError:
    pass
else:
    raise SystemExit("no OverflowError")
print(time.perf_counter() - start, peak_kib() - before)
"""


@pytest.mark.parametrize("form", FORMS)
def test_huge_expansion_stops_at_the_limit(form: Form) -> None:
    """14 KB of input that would expand to 18-40 million characters: OverflowError at 1 MiB,
    at once and in a few MiB, measured in a fresh process."""
    tokens = {"uint8": 9000, "uri": 7000, "utf16": 6000}[form]
    data = stream(repeated("a", tokens), form)
    raw = data if isinstance(data, bytes) else data.encode()
    assert len(raw) < 16_500 and run_length(tokens) > 18_000_000
    probe = subprocess.run(
        [sys.executable, "-c", BOUND_PROBE, form],
        input=raw,
        capture_output=True,
        check=True,
        timeout=60,
    )
    seconds, peak_growth_kib = probe.stdout.split()
    assert float(seconds) < 0.25
    # It needs about 2 MiB (1 MiB of output as UTF-16). Checking the limit only at the end
    # would take 36-80 MB of UTF-16 here.
    assert int(peak_growth_kib) < 16 * 1024


@pytest.mark.parametrize("form", FORMS)
def test_five_million_from_four_kilobytes(form: Form) -> None:
    tokens = 3160  # 5,000,703 'a' from about 4.7 KB
    data = stream(repeated("a", tokens), form)
    n = run_length(tokens)
    assert DECODERS[form](data, n) == b"a" * n
    with pytest.raises(OverflowError, match="limit of 1048576 bytes"):
        DECODERS[form](data, MIB)
    with pytest.raises(OverflowError):
        DECODERS[form](data, n - 1)


def test_limit_counts_utf8_bytes() -> None:
    data = uint8_stream(repeated("é", 20))  # U+00E9: 2 bytes each
    n = run_length(20)
    assert decompress_uint8(data, 2 * n) == "é".encode() * n
    with pytest.raises(OverflowError):
        decompress_uint8(data, 2 * n - 1)
    assert decompress_uint8(uint8_stream([(2, 2)]), 0) == b""
    with pytest.raises(OverflowError):
        decompress_uint8(uint8_stream([(0, 2), (97, 8), (2, 3)]), 0)


def test_a_stream_ending_on_a_value_boundary_is_truncated() -> None:
    """All 16 bits used, no end marker: truncated, before the zeros past the end are read
    as a NUL literal that would pass the limit."""
    data = uint8_stream([(0, 2), (97, 8), (3, 3), (3, 3)])
    assert len(data) == 2
    with pytest.raises(ValueError, match="truncated"):
        decompress_uint8(data, 3)


@given(st.binary(max_size=200), st.integers(0, 3000))
@settings(max_examples=1000, deadline=None)
def test_garbage_never_crashes_hypothesis(data: bytes, limit: int) -> None:
    """Any bytes: bytes back, or ValueError/OverflowError; and the limit only cuts."""
    for decode in DECODERS.values():
        try:
            full: bytes | None = decode(data, BIG)
        except ValueError:
            full = None
        try:
            got = decode(data, limit)
        except OverflowError:
            assert full is None or len(full) > limit
        except ValueError:
            assert full is None
        else:
            assert got == full and len(got) <= limit


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_garbage_text_never_crashes_hypothesis(data: str) -> None:
    for decode in (decompress_uri, decompress_utf16):
        with contextlib.suppress(ValueError, OverflowError):
            assert isinstance(decode(data, MIB), bytes)


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "data", "message"),
    [
        ("uint8", b"", "empty input"),
        ("uri", "", "empty input"),
        ("uri", b"", "empty input"),
        ("utf16", "", "empty input"),
        ("uint8", bytes.fromhex(WORKED_UINT8)[:-1], "odd byte count"),
        ("uri", WORKED_URI[:5] + "=" + WORKED_URI[6:], "invalid character at offset 5"),
        ("uri", WORKED_URI[:5] + "/" + WORKED_URI[6:], "invalid character at offset 5"),
        ("uri", WORKED_URI + "é", "invalid character at offset 61"),
        ("utf16", "\u1b63\x1f", "invalid character at offset 1"),
        ("utf16", "\u1b63\u8020", "invalid character at offset 1"),
        ("utf16", "\u1b63😀", "invalid character at offset 1"),
        ("utf16", b"\xe1\xad\xa3\xff", "invalid character at offset 3"),
        ("utf16", b"\xe1\xad\xa3\xc0\xa0", "invalid character at offset 3"),  # overlong ' '
        ("utf16", b"\xe1\xad\xa3\xe0\x80\xa0", "invalid character at offset 3"),  # overlong
        ("utf16", b"\xe1\xad", "invalid character at offset 0"),  # cut inside a character
        ("uint8", bytes.fromhex(WORKED_UINT8)[:20], "truncated stream"),
        ("uint8", uint8_stream([(0, 2), (97, 8), (5, 3), (2, 3)]), "undefined dictionary entry"),
        ("uint8", uint8_stream([(3, 2)]), "invalid first token"),
    ],
)
def test_bad_input(form: Form, data: Data, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DECODERS[form](data, BIG)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="limit"):
        decompress_uint8(bytes.fromhex(WORKED_UINT8), -1)
    with pytest.raises(TypeError):
        decompress_uri(12, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decompress_uint8("abcd", 10)  # type: ignore[arg-type]
    # a limit past 2**31 - 1 acts as 2**31 - 1
    assert decompress_uint8(bytes.fromhex(WORKED_UINT8), 1 << 62) == WORKED_TEXT.encode()
