"""Faithful Python ports of what four public GrowingIO raw-data export clients do.

Each port keeps its client's quirks on purpose: no retry, no sleep, positional parsing of
the download links, the same file naming and the same reaction to an unexpected answer.
They are what `tests/e2e/test_compat.py` replays against a real `rawexport demo`, so a
server change that breaks one of them shows up as that client's failure.

- `python_script`: a Python script (requests + `urllib.request.urlretrieve`), per type.
- `split_link` / `split_link_v1`: the Java SDK's `splitLink()`, with Java String semantics.
- `JavaSdkV2`, `JavaSdkV1`: a fork of the Java SDK (Apache HttpClient style), v2 and v1.
- `JavaClientLoops`: a Java client (org.json style) looping over a day and its 24 hours.

`requests` is importable in the project's venv (growingio-tracker and schemathesis, dev
dependencies, require it), so the ports use it, plus `urllib.request` where a client did.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import requests

from rawexport.schema import DATA_TYPE_NAMES

# Generous for a server that delays over-rate requests (up to 60 s each) instead of 429.
TIMEOUT = (10.0, 120.0)  # (connect, read) seconds

Write = tuple[str, Path]  # (download link, file the client wrote it to)


# ---- Java semantics ----------------------------------------------------------------------


class StringIndexOutOfBoundsException(IndexError):
    """java.lang.StringIndexOutOfBoundsException, as `String.substring` throws it."""


class ParseException(ValueError):
    """java.text.ParseException, as `SimpleDateFormat.parse` throws it."""


class JSONException(ValueError):
    """org.json.JSONException (Android's message style: "No value for <key>")."""


def java_index_of(s: str, target: str, from_index: int = 0) -> int:
    """`String.indexOf(target, fromIndex)`: a negative fromIndex counts as 0; -1 if absent.

    Python's `str.find` would treat a negative start as counted from the end, Java does not.
    """
    return s.find(target, max(0, from_index))


def java_last_index_of(s: str, target: str) -> int:
    """`String.lastIndexOf(target)`: -1 if absent."""
    return s.rfind(target)


def java_substring(s: str, begin: int, end: int | None = None) -> str:
    """`String.substring(begin[, end])`: throws where Python slicing would clamp."""
    stop = len(s) if end is None else end
    if begin < 0 or stop > len(s) or begin > stop:
        raise StringIndexOutOfBoundsException(
            f"begin {begin}, end {stop}, length {len(s)}: {s[:120]!r}"
        )
    return s[begin:stop]


def _parse_utc_minute(date: str) -> datetime:
    """`SimpleDateFormat("yyyyMMddHHmm")` in UTC. Only 12 digits parse (Java's lenient
    parser accepts some other shapes; no link this suite builds or gets has them)."""
    if len(date) != 12 or not date.isascii() or not date.isdigit():
        raise ParseException(f'Unparseable date: "{date}"')
    try:
        return datetime.strptime(date, "%Y%m%d%H%M").replace(tzinfo=UTC)
    except ValueError:
        raise ParseException(f'Unparseable date: "{date}"') from None


# ---- splitLink ---------------------------------------------------------------------------


class SplitLink(NamedTuple):
    data_type: str  # e.g. "custom_event_v2" for a v2 key: the SDK keeps the suffix
    date: str  # the key's UTC stamp, as in the link
    beijing_dir: str  # v2: "yyyyMMdd/HH" of the stamp + 8 h; v1: "" (not computed)


def _split(link: str, start: int) -> tuple[str, str]:
    # int i = link.indexOf('_', start);
    # String s = link.substring(i + 1, link.indexOf('/', i));
    # int j = s.lastIndexOf('_');
    # return {s.substring(0, j), s.substring(j + 1)};
    i = java_index_of(link, "_", start)
    s = java_substring(link, i + 1, java_index_of(link, "/", i))
    j = java_last_index_of(s, "_")
    return java_substring(s, 0, j), java_substring(s, j + 1)


def split_link(link: str, start: int) -> SplitLink:
    """The Java SDK's v2 `splitLink(link)`: the original searches for `_` from index 64,
    one fork from 63 (see GROWINGIO_EXPORT_SPEC §2.6).

    It skips the origin and the 4-hex prefix by position, takes `<type>_<date>` up to the
    next `/`, splits it at its last `_`, parses the date as UTC `yyyyMMddHHmm` and adds 8 h.
    The Beijing directory is `yyyyMMdd/HH` (one directory per Beijing day, one per hour in
    it), the layout the fork writes files under.
    """
    data_type, date = _split(link, start)
    beijing = _parse_utc_minute(date) + timedelta(hours=8)
    return SplitLink(data_type, date, beijing.strftime("%Y%m%d/%H"))


def split_link_v1(link: str, start: int) -> SplitLink:
    """The same fork's v1 `splitLink`: the same positional split, without date parsing
    (GrowingIO's v1 day folders end in `_yyyyMMdd`, which the fork uses as is)."""
    data_type, date = _split(link, start)
    return SplitLink(data_type, date, "")


def part_file_name(link: str) -> str:
    """`link.substring(link.indexOf("part"), link.indexOf("?"))`."""
    return java_substring(link, java_index_of(link, "part"), java_index_of(link, "?"))


# ---- credentials -------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    base: str  # the API origin, e.g. http://127.0.0.1:8080 (no trailing slash)
    ai: str
    uid: str  # GrowingIO's "project UID"
    public_key: str
    private_key: str


def sign_auth(private_key: str, uid: str, ai: str, tm: str) -> str:
    message = f"POST\n/auth/token\nproject={uid}&ai={ai}&tm={tm}"
    return hmac.new(private_key.encode(), message.encode(), hashlib.sha256).hexdigest()


def form_auth(creds: Credentials) -> str:
    """POST /auth/token with a form-urlencoded body, as HttpClient's UrlEncodedFormEntity
    (and requests' `data=`) sends it; answers the code."""
    tm = str(int(time.time() * 1000))
    form = [
        ("project", creds.uid),
        ("ai", creds.ai),
        ("tm", tm),
        ("auth", sign_auth(creds.private_key, creds.uid, creds.ai, tm)),
    ]
    r = requests.post(
        creds.base + "/auth/token",
        data=form,
        headers={"X-Client-Id": creds.public_key},
        timeout=TIMEOUT,
    )
    return str(json.loads(r.text)["code"])


def _v2_url(creds: Credentials, export_type: str, data_type: str, date: str) -> str:
    return f"{creds.base}/v2/insights/{export_type}/{data_type}/{creds.ai}/{date}.json?expire=60"


def _save(link: str, path: Path) -> None:
    """A Java client's download: GET, then the entity streamed to a FileOutputStream, with
    no status check (whatever the body is becomes the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    r = requests.get(link, timeout=TIMEOUT)
    path.write_bytes(r.content)


# ---- a. the Python script ----------------------------------------------------------------


def python_script(creds: Credentials, day: str, out_dir: Path) -> list[Write]:
    """A public Python script, per data type in `DATA_TYPE_NAMES` order, no retry, no sleep:

    1. `requests.post(base + '/auth/token', data={project, ai, tm, auth},
       headers={'X-Client-Id': pub})` (a form body), once per type, `code` from its JSON;
    2. `requests.get(.../v2/insights/day/{type}/{ai}/{day}.json?expire=60)` with
       `X-Client-Id` and `Authorization: <code>`;
    3. `json.loads(r.text)['status']`: an answer without `status` (a 429's
       `{"message", "errors"}`) raises KeyError, which propagates; that is the bug guarded;
    4. when FINISHED, `urllib.request.urlretrieve(url, out_dir/type/<name>.csv.gz)` per
       link, `<name>` = `url.split('/')[3].split('_')[-1]` (the key's UTC stamp).

    Answers what it wrote, in order.
    """
    written: list[Write] = []
    for data_type in DATA_TYPE_NAMES:
        tm = str(int(time.time() * 1000))
        auth = sign_auth(creds.private_key, creds.uid, creds.ai, tm)
        r = requests.post(
            creds.base + "/auth/token",
            data={"project": creds.uid, "ai": creds.ai, "tm": tm, "auth": auth},
            headers={"X-Client-Id": creds.public_key},
            timeout=TIMEOUT,
        )
        code = json.loads(r.text)["code"]
        r = requests.get(
            _v2_url(creds, "day", data_type, day),
            headers={"X-Client-Id": creds.public_key, "Authorization": code},
            timeout=TIMEOUT,
        )
        body = json.loads(r.text)
        if body["status"] == "FINISHED":
            folder = out_dir / data_type
            folder.mkdir(parents=True, exist_ok=True)
            for url in body["downloadLinks"]:
                path = folder / (url.split("/")[3].split("_")[-1] + ".csv.gz")
                urllib.request.urlretrieve(url, path)
                written.append((url, path))
    return written


# ---- c. the Java SDK fork, v2 -------------------------------------------------------------

SDK_V2_TYPES: tuple[str, ...] = tuple(t for t in DATA_TYPE_NAMES if t != "ads_track_click")


@dataclass
class JavaSdkV2:
    """A fork of GrowingIO's Java SDK, v2 day export (Apache HttpClient style):

    - one form-urlencoded POST /auth/token at the start;
    - per type of `types` (9 by default: the 10 without `ads_track_click`), one GET of the
      day's links, read regardless of the HTTP status; `downloadLinks` missing from the
      JSON (a 429's body, say) is "no data": the type is skipped silently;
    - per link `splitLink(link, start)` (63 or 64), then the file is written to
      `out/{beijing dir}/{dataType}/{file}`, file = the link from "part" up to "?".

    No retry, no sleep. `log` holds what the SDK would log (HTTP statuses, skips).
    """

    creds: Credentials
    start: int
    out_dir: Path
    types: Sequence[str] = SDK_V2_TYPES
    log: list[str] = field(default_factory=list)

    def run(self, day: str) -> list[Write]:
        code = form_auth(self.creds)
        headers = {"X-Client-Id": self.creds.public_key, "Authorization": code}
        written: list[Write] = []
        for data_type in self.types:
            r = requests.get(
                _v2_url(self.creds, "day", data_type, day), headers=headers, timeout=TIMEOUT
            )
            self.log.append(f"GET day {data_type}: HTTP {r.status_code}")
            body: dict[str, Any] = json.loads(r.text)
            links = body.get("downloadLinks")
            if links is None:
                continue  # "no data"
            for link in links:
                split = split_link(link, self.start)
                path = self.out_dir / split.beijing_dir / split.data_type / part_file_name(link)
                _save(link, path)
                written.append((link, path))
        return written


# ---- d. the Java SDK fork, v1 -------------------------------------------------------------


@dataclass
class JavaSdkV1:
    """The same fork's v1 day export:

    - one form-urlencoded POST /auth/token, one GET `/insights/{ai}/{day}.json?expire=60`;
    - reads `downlinks`; missing: logs "the response has no downlinks", writes nothing and
      returns normally;
    - per link `splitLink(link, start)` (64, the original SDK's index, by default):
      dataType = the v1 type; `fileName` = the link from "part" up to "?"; the file goes
      to `out/{dataType}/` + `fileName.substring(0, 10) + date`, date = the requested
      `yyyyMMdd` (on GrowingIO the v1 day folder's own date). So every `part-00000` of a
      type's day lands in one file: parts whose numbers repeat within the day overwrite
      each other.
    """

    creds: Credentials
    out_dir: Path
    start: int = 64
    log: list[str] = field(default_factory=list)

    def run(self, day: str) -> list[Write]:
        code = form_auth(self.creds)
        headers = {"X-Client-Id": self.creds.public_key, "Authorization": code}
        url = f"{self.creds.base}/insights/{self.creds.ai}/{day}.json?expire=60"
        r = requests.get(url, headers=headers, timeout=TIMEOUT)
        self.log.append(f"GET v1 {day}: HTTP {r.status_code}")
        body: dict[str, Any] = json.loads(r.text)
        links = body.get("downlinks")
        if links is None:
            self.log.append("the response has no downlinks")
            return []
        written: list[Write] = []
        for link in links:
            split = split_link_v1(link, self.start)
            file_name = part_file_name(link)
            path = self.out_dir / split.data_type / (java_substring(file_name, 0, 10) + day)
            _save(link, path)
            written.append((link, path))
        return written


# ---- e. the Java client's day and hour loops ----------------------------------------------

# The hour loop's types: the first 7 v2 types. 10 day calls + 24 hours x 7 = 178 calls.
HOUR_LOOP_TYPES: tuple[str, ...] = DATA_TYPE_NAMES[:7]


def _get_json_array(body: dict[str, Any], key: str) -> list[str]:
    """org.json's `getJSONArray(key)`."""
    value = body.get(key)
    if not isinstance(value, list):
        raise JSONException(f"No value for {key}" if value is None else f"{key} is no array")
    return value


@dataclass
class JavaClientLoops:
    """A Java client (org.json style), v2, back to back with no retry and no sleep:

    - one form-urlencoded POST /auth/token at the start;
    - day: per type of the 10, GET the day's links, `new JSONObject(body)` (read whatever
      the status), `getJSONArray("downloadLinks")` (missing: JSONException "No value for
      downloadLinks", which propagates), each link saved to `out/day/{type}/{file}`;
    - hours: per Beijing hour `yyyyMMdd00..23` of that day, per type of `hour_types` (7),
      GET the hour's links the same way, saved to `out/hour/{type}/{yyyyMMddHH}/{file}`;

    file = the link from "part" up to "?". 10 + 24 * 7 = 178 API calls by default.
    `day_writes` and `hour_writes` hold what each loop wrote; `calls` counts API calls.
    """

    creds: Credentials
    out_dir: Path
    hour_types: Sequence[str] = HOUR_LOOP_TYPES
    day_writes: list[Write] = field(default_factory=list)
    hour_writes: list[Write] = field(default_factory=list)
    calls: int = 0

    def _links(
        self, headers: dict[str, str], export_type: str, data_type: str, date: str
    ) -> list[str]:
        r = requests.get(
            _v2_url(self.creds, export_type, data_type, date), headers=headers, timeout=TIMEOUT
        )
        self.calls += 1
        try:
            body = json.loads(r.text)
        except ValueError as e:
            raise JSONException(f"HTTP {r.status_code}: {r.text[:200]!r}") from e
        try:
            return _get_json_array(body, "downloadLinks")
        except JSONException as e:
            raise JSONException(
                f"{e} (call {self.calls}, {export_type} {data_type} {date}: "
                f"HTTP {r.status_code} {r.text[:200]})"
            ) from None

    def run(self, day: str) -> list[Write]:
        code = form_auth(self.creds)
        headers = {"X-Client-Id": self.creds.public_key, "Authorization": code}
        for data_type in DATA_TYPE_NAMES:
            for link in self._links(headers, "day", data_type, day):
                path = self.out_dir / "day" / data_type / part_file_name(link)
                _save(link, path)
                self.day_writes.append((link, path))
        for hh in range(24):
            hour = f"{day}{hh:02d}"
            for data_type in self.hour_types:
                for link in self._links(headers, "hour", data_type, hour):
                    path = self.out_dir / "hour" / data_type / hour / part_file_name(link)
                    _save(link, path)
                    self.hour_writes.append((link, path))
        return self.day_writes + self.hour_writes
