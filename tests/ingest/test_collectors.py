"""The collectors in-process: tracker, SaaS and native bodies, encodings, auth, bad input."""

from __future__ import annotations

import gzip
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cramjam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from rawexport.api.collect import collector_routes
from rawexport.catalog import Catalog, KeyPair, Project
from rawexport.ingest.codecs import Refused
from rawexport.ingest.collectors import sdk_events, stripped
from rawexport.ingest.group_commit import Ingestor, make_ingestor
from rawexport.settings import Settings
from rawexport.store import LocalEventStore


@dataclass
class Site:
    settings: Settings
    catalog: Catalog
    store: LocalEventStore
    ingestor: Ingestor
    project: Project
    key: KeyPair
    client: TestClient

    def rows(self, data_type: str) -> list[dict[str, Any]]:
        files = [
            f
            for h in self.store.hours(self.project.ai, data_type)
            for f in self.store.hour_files(self.project.ai, data_type, h)
        ]
        if not files:
            return []
        return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()  # type: ignore[no-any-return]

    def post(self, path: str, body: bytes | str, **headers: str) -> Any:
        """POST as an SDK would, asking for the JSON report (the CDP route answers 204
        with no body otherwise)."""
        h = {"x-client-id": self.key.public_key, "prefer": "return=representation"} | {
            k.replace("_", "-"): v for k, v in headers.items()
        }
        return self.client.post(path.format(ai=self.project.ai), content=body, headers=h)


def make_site(tmp_path: Path, **settings: Any) -> Site:
    s = Settings(home=tmp_path, **settings)
    tmp_path.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(s.database_url)
    p = catalog.create_project("main")
    key = catalog.create_key_pair(p.id)
    ingestor = make_ingestor(s, catalog)
    app = Starlette(routes=collector_routes(s, catalog, ingestor))
    return Site(s, catalog, LocalEventStore(s.events_dir), ingestor, p, key, TestClient(app))


TRACKER = "/v3/projects/{ai}/collect?stm=1700000000123"
SAAS = "/custom/{ai}/events?stm=1700000000123"
NATIVE = "/api/v1/projects/{ai}/events"

TRACKER_EVENTS = [
    {
        "eventType": "CUSTOM",
        "timestamp": 1700000000000,
        "eventName": "buy",
        "deviceId": "dev-1",
        "userKey": "phone",
        "userId": "user-1",
        "attributes": {"price": "12", "n": 3, "ok": True, "名": "值"},
        "sendTime": 1700000000000,
        "dataSourceId": "ds",
        "projectKey": "pk",
        "sdkVersion": "1.0.5",
        "platform": "python",
    },
    {
        "eventType": "LOGIN_USER_ATTRIBUTES",
        "timestamp": 1700000000001,
        "userId": "user-2",
        "attributes": {"gender": "f"},
        "dataSourceId": "ds",
        "projectKey": "pk",
    },
]


def check_tracker_rows(site: Site, before: int) -> None:
    after = int(time.time() * 1000)
    [ce] = site.rows("custom_event")
    assert ce["visitUserId"] == "dev-1" and ce["loginUserId"] == "user-1"
    assert ce["eventName"] == "buy" and ce["time"] == 1700000000000
    assert json.loads(ce["eventVariable"]) == {"price": "12", "n": "3", "ok": "true", "名": "值"}
    assert before <= ce["sendTime"] <= after  # the receive time, not the client's sendTime
    [v] = site.rows("vstr")
    assert v["visitUserId"] == "user-2"  # no deviceId: the login user id
    assert json.loads(v["visitorVariable"]) == {"gender": "f", "$loginUserId": "user-2"}
    assert v["time"] == 1700000000001


def test_tracker_json(site: Site) -> None:
    before = int(time.time() * 1000)
    r = site.post(TRACKER, json.dumps(TRACKER_EVENTS), content_type="application/json")
    assert r.status_code == 200 and r.json() == {"accepted": 2, "rejected": []}
    check_tracker_rows(site, before)


def test_tracker_snappy_and_xor(site: Site, tmp_path: Path) -> None:
    raw = bytes(cramjam.snappy.compress_raw(json.dumps(TRACKER_EVENTS).encode()))
    before = int(time.time() * 1000)
    r = site.post(TRACKER, raw, x_compress_codec="2")
    assert r.status_code == 200 and r.json()["accepted"] == 2
    check_tracker_rows(site, before)
    other = make_site(tmp_path / "xor")
    crypted = bytes(b ^ (1700000000123 & 0xFF) for b in raw)
    r = other.post(TRACKER, crypted, x_compress_codec="2", x_crypt_codec="1")
    assert r.status_code == 200 and r.json()["accepted"] == 2
    check_tracker_rows(other, before)
    other.ingestor.stop()


def test_saas_raw_and_snappy(site: Site) -> None:
    ai = site.project.ai
    events = [
        {"tm": 5, "cs1": "u9", "s": "sess", "u": "vis", "ai": ai, "t": "cstm", "n": "pay"},
        {"tm": 6, "u": "vis", "t": "cstm", "n": "view", "e": {"k": "v"}, "p": "/a"},
        {"tm": 7, "u": "vis", "ai": "ffffffffffffffff", "t": "cstm", "n": "x"},
        {"tm": 8, "u": "vis", "t": "vst"},
    ]
    events.append({"tm": 9, "u": "vis", "t": "nope"})
    r = site.post(SAAS, json.dumps(events))
    assert r.status_code == 200
    assert r.json() == {
        "accepted": 3,
        "rejected": [
            {"index": 2, "field": "ai", "reason": "event of another project"},
            {"index": 4, "field": "t", "reason": "unsupported event type 'nope'"},
        ],
    }
    # the same events again, snappy: a re-send, taken and not stored twice
    r = site.post(SAAS, bytes(cramjam.snappy.compress_raw(json.dumps(events[:2]).encode())))
    assert r.json() == {"accepted": 2, "rejected": [], "duplicates": 2}
    fresh = [{**e, "tm": int(str(e["tm"])) + 10} for e in events[:2]]
    r = site.post(SAAS, bytes(cramjam.snappy.compress_raw(json.dumps(fresh).encode())))
    assert r.json() == {"accepted": 2, "rejected": []}
    rows = sorted(site.rows("custom_event"), key=lambda r: (r["time"], r["sendTime"]))
    assert [(r["time"], r["eventName"], r["loginUserId"]) for r in rows] == [
        (5, "pay", "u9"),
        (6, "view", None),
        (15, "pay", "u9"),
        (16, "view", None),
    ]
    assert rows[0]["sessionId"] == "sess" and rows[1]["eventVariable"] == '{"k":"v"}'
    assert rows[1]["page"] == "/a"
    [visit] = site.rows("visit")
    assert (visit["visitUserId"], visit["time"]) == ("vis", 8)


def test_native_ndjson_array_and_gzip(site: Site) -> None:
    lines = [
        {"type": "page", "visitUserId": "v1", "page": "/p", "time": 1},
        {"type": "action_tag", "actionRequestId": "a1", "ruleId": "r"},
        {"type": "visit", "visitUserId": "v2", "latitude": 3},
    ]
    ndjson = "\n".join(json.dumps(e) for e in lines) + "\n"
    assert site.post(NATIVE, ndjson).json() == {"accepted": 3, "rejected": []}
    assert site.post(NATIVE, json.dumps(lines[:1])).json()["accepted"] == 1
    gz = gzip.compress(ndjson.encode())
    assert site.post(NATIVE, gz, content_encoding="gzip").json()["accepted"] == 3
    assert len(site.rows("page")) == 3 and len(site.rows("action_tag")) == 2
    assert {r["latitude"] for r in site.rows("visit")} == {3.0}


def test_partial_rejection_keeps_valid_events(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    events = [
        {"type": "page", "visitUserId": "ok-1"},
        {"type": "nope", "visitUserId": "x"},
        {"type": "page", "visitUserId": "x", "time": "12"},
        {"type": "page", "visitUserId": "x", "deviceOrientation": "x" * 11},
        {"type": "page", "page": "/no-visitor"},
        {"type": "page", "visitUserId": "x", "bogus": 1},
        {"type": "page", "visitUserId": "x", "appVariable": {"a": [1]}},
        {"type": "page", "visitUserId": "x", "time": True},
        "not an object",
        {"type": "page", "visitUserId": "ok-2", "deviceOrientation": "x" * 10},
    ]
    r = site.post(NATIVE, json.dumps(events))
    assert r.status_code == 200
    assert r.json() == {
        "accepted": 2,
        "rejected": [
            {"index": 1, "field": "type", "reason": "unknown data type 'nope'"},
            {"index": 2, "field": "time", "reason": "expected an integer"},
            {"index": 3, "field": "deviceOrientation", "reason": "longer than 10 characters"},
            {"index": 4, "field": "visitUserId", "reason": "required"},
            {"index": 5, "field": "bogus", "reason": "not a column of page"},
            {
                "index": 6,
                "field": "appVariable",
                "reason": "value of 'a' must be a string or a number",
            },
            {"index": 7, "field": "time", "reason": "expected an integer"},
            {"index": 8, "field": "", "reason": "an event must be a JSON object"},
        ],
    }
    assert sorted(r["visitUserId"] for r in site.rows("page")) == ["ok-1", "ok-2"]
    assert f"{site.project.ai}: rejected 8 of 10 events (8 since start)" in caplog.text


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        (NATIVE, b'{"type": "page", "visitUserId": "v"}\n{"type": ', {}),
        (NATIVE, b"[1, 2", {}),
        (NATIVE, b"", {}),
        (NATIVE, b"not gzip at all", {"content_encoding": "gzip"}),
        (
            NATIVE,
            gzip.compress(b'{"type":"page","visitUserId":"v"}')[:-12],
            {"content_encoding": "gzip"},
        ),
        (NATIVE, b'{"type":"page","visitUserId":"v"}', {"content_encoding": "br"}),
        (TRACKER, b'{"eventType": "CUSTOM"', {}),
        (TRACKER, b"\x00\x01garbage", {"x_compress_codec": "2"}),
        (SAAS, b"\xff\xfe not snappy", {}),
        (SAAS, b"[{]", {}),
    ],
)
def test_bad_bodies_are_400_and_store_nothing(
    site: Site, path: str, body: bytes, headers: dict[str, str]
) -> None:
    r = site.post(path, body, **headers)
    assert r.status_code == 400
    assert set(r.json()) == {"message", "errors"} and r.json()["message"]
    for t in ("page", "custom_event", "vstr"):
        assert site.rows(t) == []


def test_auth_and_project_checks(site: Site) -> None:
    body = json.dumps([{"type": "page", "visitUserId": "v"}])
    r = site.client.post("/api/v1/projects/0000000000000000/events", content=body)
    assert r.status_code == 404 and r.json()["errors"] == []
    assert site.post(NATIVE, body, x_client_id="wrong").status_code == 403
    other = site.catalog.create_project("other")
    other_key = site.catalog.create_key_pair(other.id)
    assert site.post(NATIVE, body, x_client_id=other_key.public_key).status_code == 403
    token = site.catalog.create_api_token(site.project.id)
    r = site.client.post(
        NATIVE.format(ai=site.project.ai), content=body, headers={"authorization": f"Token {token}"}
    )
    assert r.status_code == 200
    # The tracker sends no key at all; that is allowed unless collect_require_key is set.
    r = site.client.post(NATIVE.format(ai=site.project.ai), content=body)
    assert r.status_code == 200
    assert len(site.rows("page")) == 2


def test_disabled_project_is_403(tmp_path: Path) -> None:
    s = make_site(tmp_path)
    s.catalog.set_export(s.project.ai, False)
    r = s.post(NATIVE, json.dumps([{"type": "page", "visitUserId": "v"}]))
    assert r.status_code == 403 and r.json()["message"] == "export is disabled for this project"
    assert s.rows("page") == []


def test_require_key_setting(tmp_path: Path) -> None:
    s = make_site(tmp_path, collect_require_key=True)
    body = json.dumps([{"type": "page", "visitUserId": "v"}])
    r = s.client.post(NATIVE.format(ai=s.project.ai), content=body)
    assert r.status_code == 403
    assert s.post(NATIVE, body).status_code == 200
    s.ingestor.stop()


def test_size_limits_are_413(tmp_path: Path) -> None:
    s = make_site(tmp_path, max_body_bytes=2000, max_batch_events=3)
    event = {"type": "page", "visitUserId": "v", "page": "/x"}
    big = json.dumps([event] * 50).encode()
    assert len(big) > 2000
    assert s.post(NATIVE, big).status_code == 413
    bomb = gzip.compress(b"[" + b" " * 100_000 + b"]")
    assert len(bomb) < 2000
    r = s.post(NATIVE, bomb, content_encoding="gzip")
    assert r.status_code == 413 and "decompressed" in r.json()["message"]
    r = s.post(NATIVE, json.dumps([event] * 4))
    assert r.status_code == 413
    assert s.post(NATIVE, json.dumps([event] * 3)).json()["accepted"] == 3
    assert len(s.rows("page")) == 3
    s.ingestor.stop()


def tracker_messages() -> list[Any]:
    from growingio_tracker.message import CustomEventMessage, UserLoginMessage

    custom = (
        CustomEventMessage.EventBuilder()
        .set_product_id("pk")
        .set_data_source_id("ds")
        .set_event_name("buy")
        .set_event_time(1700000000000)
        .set_anonymous_id("dev-1")
        .set_login_user("phone", "user-1")
        .set_attributes({"price": "12", "n": "3", "ok": "true", "名": "值"})
        .build()
    )
    user = (
        UserLoginMessage.UserBuilder()
        .set_product_id("pk")
        .set_data_source_id("ds")
        .set_event_time(1700000000001)
        .set_login_user(None, "user-2")
        .set_attributes({"gender": "f"})
        .build()
    )
    return [custom, user]


@pytest.mark.parametrize("parser_name", ["json", "snappy", "snappy-crypt", "protobuf"])
def test_every_tracker_parser(site: Site, parser_name: str) -> None:
    """Bodies built by growingio-tracker's own parsers, with its params and headers."""
    from growingio_tracker.data_parser import JsonParser
    from growingio_tracker_protobuf.protobuf_parser import ProtobufParser
    from growingio_tracker_snappy.snappy_parser import SnappyParser

    parser = {
        "json": JsonParser(),
        "snappy": SnappyParser(),
        "snappy-crypt": SnappyParser(crypt_data=True),
        "protobuf": ProtobufParser(),
    }[parser_name]
    stm = parser.get_timestamp()
    body = parser.get_bytes(tracker_messages(), stm)
    before = int(time.time() * 1000)
    r = site.client.post(
        f"/v3/projects/{site.project.ai}/collect",
        params=parser.get_params(stm=stm) or {"stm": stm},
        content=bytes(body, "utf-8") if isinstance(body, str) else bytes(body),
        headers=parser.get_headers(),
    )
    assert r.status_code == 204 and r.content == b""  # what GrowingIO's web SDK demands
    assert r.headers["x-rawexport-accepted"] == "2"
    assert r.headers["x-rawexport-rejected"] == "0"
    check_tracker_rows(site, before)


def test_bad_protobuf_is_400(site: Site) -> None:
    r = site.post(TRACKER, b"\x0a\xff\xff", content_type="application/protobuf")
    assert r.status_code == 400 and "list of events" in r.json()["message"]
    assert site.rows("custom_event") == []


def test_saas_snappy_that_starts_like_json(site: Site) -> None:
    ai = site.project.ai
    event = {"tm": 1, "u": "v", "t": "cstm", "n": "x" * 20, "ai": ai}
    raw = json.dumps([event]).encode()
    raw = raw[:-2] + b" " * (91 - len(raw)) + raw[-2:]  # 91 bytes: the snappy header is "["
    assert len(raw) == 91
    body = bytes(cramjam.snappy.compress_raw(raw))
    assert body[:1] == b"["
    assert site.post(SAAS, body).json() == {"accepted": 1, "rejected": []}
    assert site.post(SAAS, body, x_compress_codec="2").json()["accepted"] == 1


def test_crypted_body_needs_stm(site: Site) -> None:
    raw = bytes(cramjam.snappy.compress_raw(json.dumps(TRACKER_EVENTS).encode()))
    crypted = bytes(b ^ (1700000000123 & 0xFF) for b in raw)
    path = "/v3/projects/{ai}/collect"
    r = site.post(path, crypted, x_compress_codec="2", x_crypt_codec="1")
    assert r.status_code == 400
    r = site.post(path + "?stm=5", crypted, x_compress_codec="2", x_crypt_codec="1")
    assert r.status_code == 400  # XOR with the wrong key: not snappy any more
    assert site.rows("custom_event") == []


def test_a_body_over_the_offload_size_is_stored(site: Site) -> None:
    pad = "p" * 1000
    events = [{"type": "page", "visitUserId": f"v{i}", "title": pad} for i in range(1200)]
    events.append({"type": "page"})
    body = json.dumps(events)
    assert len(body) > 1 << 20
    r = site.post(NATIVE, body)
    assert r.json()["accepted"] == 1200 and r.json()["rejected"][0]["index"] == 1200
    assert len(site.rows("page")) == 1200


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=40)
    | st.lists(
        st.sampled_from([b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c", b"x", b"[1]"]), max_size=12
    ).map(b"".join)
)
def test_stripped_is_strip_without_a_copy(data: bytes) -> None:
    got = stripped(data)
    assert bytes(got) == data.strip()
    assert got.obj is data  # a view of the body, not a copy


def test_stripped_long_whitespace_tails() -> None:
    body = b"  [1]" + b" \n" * 10_000
    assert bytes(stripped(body)) == b"[1]"
    assert bytes(stripped(b" " * 20_000)) == b""


def test_sdk_events_refuse_a_body_that_is_not_json_before_parsing_it() -> None:
    with pytest.raises(Refused, match="starts with neither"):
        sdk_events(b"  ,,\n,,\n", 10)
    assert sdk_events(b' \n[{"a": 1}]\n', 10) == [{"a": 1}]
    assert sdk_events(b'{"a": 1}', 10) == [{"a": 1}]
    assert sdk_events(b" \t\n", 10) == []
