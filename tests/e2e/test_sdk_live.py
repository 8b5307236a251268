"""GrowingIO's Python SDKs from PyPI, run live against a real `rawexport serve` on defaults:
growingio-tracker (CDP, every parser it ships) and gio-tracker (SaaS server events, JSON and
snappy + XOR). Each event they send is found in the export exactly once, in its columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rawexport.timeutil import HOUR_MS, now_ms
from tests.e2e.test_ingest import export_rows, project
from tests.e2e_util import Server, env_for, free_port

pytestmark = pytest.mark.e2e


def test_growingio_tracker_every_parser(tmp_path: Path) -> None:
    from growingio_tracker import DefaultConsumer, GrowingTracker
    from growingio_tracker.data_parser import JsonParser
    from growingio_tracker_protobuf.protobuf_parser import ProtobufParser
    from growingio_tracker_snappy.snappy_parser import SnappyParser

    home, port = tmp_path / "home", free_port()
    env = env_for(home, port)
    ai = project(env)
    parsers: dict[str, Any] = {
        "json": JsonParser(),
        "snappy": SnappyParser(),
        "xor": SnappyParser(crypt_data=True),
        "protobuf": ProtobufParser(),
    }
    with Server(["serve"], env, port, tmp_path / "serve.log") as server:
        server.wait_ready()
        start = now_ms()
        for n, (name, parser) in enumerate(parsers.items()):
            consumer = DefaultConsumer(ai, "ds1", server.base, data_parser=parser)
            tracker = GrowingTracker(ai, "ds1", server.base, consumer)
            tracker.track_custom_event(
                f"buy_{name}",
                event_time=1700000000000 + n,
                anonymous_id=f"dev-{name}",
                login_user_id=f"user-{name}",
                attributes={"price": 12, "tags": ["a", "b"], "名": "值"},
            )
            tracker.track_user(
                login_user_id=f"user-{name}",
                anonymous_id=f"dev-{name}",
                attributes={"vip": name},
                event_time=1700000001000 + n,
            )
            tracker.submit_item(f"item-{name}", "sku", item_attrs={"color": "red"})
        end = now_ms()
    hours = {start - start % HOUR_MS, end - end % HOUR_MS}
    custom = {r["visitUserId"]: r for r in export_rows(env, home, ai, "custom_event", hours)}
    assert sorted(custom) == sorted(f"dev-{n}" for n in parsers)
    for n, name in enumerate(parsers):
        row = custom[f"dev-{name}"]
        assert (row["eventName"], row["loginUserId"], row["time"]) == (
            f"buy_{name}",
            f"user-{name}",
            str(1700000000000 + n),
        )
        assert json.loads(row["eventVariable"]) == {"price": "12", "tags": "a||b", "名": "值"}
    vstr = export_rows(env, home, ai, "vstr", hours)
    assert sorted((r["visitUserId"], json.loads(r["visitorVariable"])["vip"]) for r in vstr) == [
        (f"dev-{n}", n) for n in sorted(parsers)
    ]
    assert {json.loads(r["visitorVariable"])["$loginUserId"] for r in vstr} == {
        f"user-{n}" for n in parsers
    }


def test_gio_tracker_saas_server_events(tmp_path: Path) -> None:
    """gio-tracker posts to a fixed host (`Consumer.endpoints`): that URL is all we change."""
    from gio_tracker import DefaultConsumer, GrowingTracker
    from gio_tracker.data_parser import JsonParser
    from gio_tracker_snappy.snappy_parser import SnappyParser

    home, port = tmp_path / "home", free_port()
    env = env_for(home, port)
    ai = project(env)
    parsers: dict[str, Any] = {
        "json": JsonParser(),
        "snappy": SnappyParser(),
        "xor": SnappyParser(crypt_data=True),
    }
    with Server(["serve"], env, port, tmp_path / "serve.log") as server:
        server.wait_ready()
        start = now_ms()
        for n, (name, parser) in enumerate(parsers.items()):
            consumer = DefaultConsumer(ai, data_parser=parser)
            consumer.endpoints["cstm"] = f"{server.base}/v3/{ai}/s2s/cstm"
            tracker = GrowingTracker.consumer(consumer)
            tracker.track_custom_event(
                f"order_{name}",
                f"member-{name}",
                event_time=1700000000000 + n,
                num=n + 1,
                attributes={"price": "9.9", "tags": ["a", "b"]},
            )
        end = now_ms()
    hours = {start - start % HOUR_MS, end - end % HOUR_MS}
    rows = sorted(export_rows(env, home, ai, "custom_event", hours), key=lambda r: r["time"])
    assert [
        (r["eventName"], r["loginUserId"], r["time"], r["eventNumber"], r["visitUserId"])
        for r in rows
    ] == [
        (f"order_{name}", f"member-{name}", str(1700000000000 + n), str(n + 1), "")
        for n, name in enumerate(parsers)
    ]
    assert {r["eventVariable"] for r in rows} == {'{"price":"9.9","tags":"a||b"}'}
