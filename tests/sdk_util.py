"""GrowingIO SDK traffic for the collection tests: the captured fixtures, replayed, and the
rows spec/GROWINGIO_COLLECT_SPEC.md §4 says their events become."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sdk-requests"

# event type (CDP eventType or SaaS t) -> the v2 type its rows are filed under
TYPE_OF = {
    "VISIT": "visit",
    "vst": "visit",
    "PAGE": "page",
    "page": "page",
    "VIEW_CLICK": "action",
    "VIEW_CHANGE": "action",
    "FORM_SUBMIT": "action",
    "clck": "action",
    "chng": "action",
    "sbmt": "action",
    "CUSTOM": "custom_event",
    "cstm": "custom_event",
    "LOGIN_USER_ATTRIBUTES": "vstr",
    "ppl": "vstr",
    "VISITOR_ATTRIBUTES": "vstr",
    "vstr": "vstr",
    "CONVERSION_VARIABLES": "evar",
    "evar": "evar",
    "PAGE_ATTRIBUTES": "pvar",
    "pvar": "pvar",
}
REQUEST_TYPES = {"VIEW_CLICK": "clck", "VIEW_CHANGE": "chng", "FORM_SUBMIT": "sbmt"}
LOGIN_TYPES = {"LOGIN_USER_ATTRIBUTES", "ppl"}


def fixture_files() -> list[Path]:
    """The captured SDK traffic; none found is an error, never a test with nothing to do."""
    files = sorted(FIXTURES.glob("*.jsonl"))
    if len(files) < 17:
        raise FileNotFoundError(f"the SDK fixtures are missing from {FIXTURES} (../shared)")
    return files


def requests_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def capture_ai(path: Path) -> str | None:
    """The project id the capture used, when the bodies name it (the notes say so)."""
    for r in requests_of(path):
        m = re.search(r"the capture used \(([0-9a-f]{16})\)", r.get("note", ""))
        if m:
            return m.group(1)
    return None


def expected_status(request: dict[str, Any]) -> int:
    """The status the SDK that sent the request takes as success (spec §1.3, §6 #6)."""
    path = request["path"]
    if request["method"] == "GET" and "/collect" not in path:
        return 200  # the Java SDKs' start-up check of the host, redirects followed
    if path.startswith(("/v3/projects/", "/projects/")):
        return 204
    return 200


@dataclass
class Answer:
    status: int
    body: bytes


def replay(base: str, ai: str, request: dict[str, Any]) -> Answer:
    """One captured request sent as the SDK sent it, the path's {ai} replaced."""
    body = base64.b64decode(request["body_b64"])
    req = urllib.request.Request(
        base + request["path"].replace("{ai}", ai),
        data=body if request["method"] != "GET" else None,
        headers=request["headers"],
        method=request["method"],
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Answer(r.status, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.read())


def map_text(value: Any) -> str:
    """A map value as the export writes it (spec §4.2 "Map values")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "||".join(map_text(v) for v in value)
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def unique_events(path: Path) -> list[dict[str, Any]]:
    """The events a file's requests carry, each once (re-sends and image GETs repeat them)."""
    seen: dict[str, dict[str, Any]] = {}
    for r in requests_of(path):
        for e in r["sent_events"]:
            if e["event_type"] == "ITEM":
                continue
            if r["sdk"].startswith("GrowingIOSDK"):
                e = {**e, "py2": True}
            seen.setdefault(json.dumps(e, sort_keys=True), e)
    return list(seen.values())


def check_rows(events: list[dict[str, Any]], rows: dict[str, list[dict[str, str]]]) -> None:
    """Every event exported exactly once, in its type, with its columns (CSV text)."""
    used: set[tuple[str, int]] = set()
    login_devices: dict[str, set[str]] = {}
    for e in events:
        if e.get("device_id") and e.get("user_id"):
            login_devices.setdefault(e["user_id"], set()).add(e["device_id"])
    for e in events:
        data_type = TYPE_OF[e["event_type"]]
        found = [
            (i, row)
            for i, row in enumerate(rows.get(data_type, []))
            if (data_type, i) not in used and _matches(e, data_type, row, login_devices)
        ]
        assert len(found) == 1, (e, data_type, len(found), rows.get(data_type))
        used.add((data_type, found[0][0]))
    for data_type, type_rows in rows.items():
        left = [r for i, r in enumerate(type_rows) if (data_type, i) not in used]
        assert left == [], f"{data_type} rows of no event: {left}"


def _matches(
    e: dict[str, Any], data_type: str, row: dict[str, str], logins: dict[str, set[str]]
) -> bool:
    device = e.get("device_id") or ""
    user = e.get("user_id") or ""
    if e.get("py2"):  # GrowingIOSDK's "user:<id>": the id it was given (README)
        user = user.removeprefix("user:")
    attributes = {k: map_text(v) for k, v in (e.get("attributes") or {}).items()}
    if str(e["timestamp"]) != row["time"]:
        return False
    if data_type == "vstr":
        if e["event_type"] in LOGIN_TYPES:
            attributes["$loginUserId"] = user
        visitor_variables: dict[str, str] = json.loads(row["visitorVariable"] or "{}")
        return row["visitUserId"] == (device or user) and visitor_variables == attributes
    if device:
        if row["visitUserId"] != device:
            return False
    elif row["visitUserId"] not in {"", *logins.get(user, set())}:
        return False
    if e.get("path") is not None and row.get("page", "") != e["path"]:
        return False
    if data_type == "custom_event":
        variables: dict[str, str] = json.loads(row["eventVariable"] or "{}")
        return (
            row["eventName"] == e["event_name"]
            and row["loginUserId"] == user
            and variables == attributes
        )
    if data_type == "action":
        kind: str = e["event_type"]
        return row["requestType"] == REQUEST_TYPES.get(kind, kind)
    return True
