"""Every answer of the export API, read the way a strict client reads it.

A Java client that maps an answer with a plain Jackson ObjectMapper fails on any field its
class does not know (FAIL_ON_UNKNOWN_PROPERTIES, the default) and downloads nothing. The
classes below know only GrowingIO's fields (spec §2.3: the 8 fields of a v2 answer, 7
without `dataType` for all types; v1's `status` and `downlinks`; the 401/429 error body),
and `strict` refuses an unknown field as Jackson does, and a missing one. rawexport's own
fields come only when asked for (`manifest=true`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from rawexport.schema import V1_TYPE_NAMES
from rawexport.timeutil import HOUR_MS
from tests.conftest import CURRENT_HOUR, World

PAST = CURRENT_HOUR - 3 * HOUR_MS  # 2025-01-10 09:00 Beijing


@dataclasses.dataclass
class V2Answer:
    status: str
    downloadLinks: list[str]  # noqa: N815 (GrowingIO's names)
    exportType: str  # noqa: N815
    dataType: str  # noqa: N815
    exportDate: str  # noqa: N815
    exportVersion: str  # noqa: N815
    requestTime: str  # noqa: N815
    errorMsg: str  # noqa: N815


@dataclasses.dataclass
class V2AllTypesAnswer:
    status: str
    downloadLinks: dict[str, list[str]]  # noqa: N815
    exportType: str  # noqa: N815
    exportDate: str  # noqa: N815
    exportVersion: str  # noqa: N815
    requestTime: str  # noqa: N815
    errorMsg: str  # noqa: N815


@dataclasses.dataclass
class V1Answer:
    status: str
    downlinks: list[str]


@dataclasses.dataclass
class ErrorBody:
    message: str
    errors: list[Any]


T = TypeVar("T")


def strict(cls: type[T], body: Any) -> T:
    """body as cls, or AssertionError naming the unknown or missing fields."""
    assert isinstance(body, dict), body
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in body if k not in known]
    assert not unknown, f"Unrecognized field(s) {unknown} (known: {known})"
    missing = [k for k in known if k not in body]
    assert not missing, f"missing field(s) {missing}"
    return cls(**body)


def answers(w: World) -> dict[str, tuple[int, Any]]:
    """(HTTP status, JSON body) of every answer shape of the export API."""
    ai, get = w.project.ai, w.client.get
    w.finish("page", PAST)
    w.fail("visit", PAST, "no space left on device")
    w.fail("visit", PAST, "disk full", version="v1")
    for t in V1_TYPE_NAMES:
        w.finish(t, PAST - HOUR_MS, version="v1")
    h = w.headers()
    out: dict[str, tuple[int, Any]] = {}

    def ask(name: str, path: str, headers: dict[str, str] | None = None) -> None:
        r = get(path, headers=h if headers is None else headers)
        out[name] = (r.status_code, r.json())

    ask("v2 finished", f"/v2/insights/hour/page/{ai}/2025011009.json")
    ask("v2 running", f"/v2/insights/hour/page/{ai}/2025011011.json")
    ask("v2 not exists", f"/v2/insights/hour/page/{ai}/2024011009.json")
    ask("v2 error", f"/v2/insights/hour/visit/{ai}/2025011009.json")
    ask("v2 day", f"/v2/insights/day/page/{ai}/20250110.json")
    ask("v2 bad date", f"/v2/insights/hour/page/{ai}/2025013309.json")
    ask("v2 bad expire", f"/v2/insights/hour/page/{ai}/2025011009.json?expire=99999")
    ask("v2 all types", f"/v2/insights/hour/{ai}/2025011009.json")
    ask("v2 all types bad", f"/v2/insights/week/{ai}/2025011009.json")
    ask("v1 finished", f"/insights/{ai}/2025011008.json")
    ask("v1 running", f"/insights/{ai}/2025011011.json")
    ask("v1 not exists", f"/insights/{ai}/20240109.json")
    ask("v1 error", f"/insights/{ai}/2025011009.json")
    ask("v1 bad date", f"/insights/{ai}/2025013.json")
    ask("v1 bad expire", f"/insights/{ai}/2025011008.json?expire=0")
    ask("no credential", f"/v2/insights/hour/page/{ai}/2025011009.json", {})
    ask("bad credential", f"/insights/{ai}/2025011008.json", {"Authorization": "nope"})
    return out


SHAPES: dict[str, type] = {
    "v2 finished": V2Answer,
    "v2 running": V2Answer,
    "v2 not exists": V2Answer,
    "v2 error": V2Answer,
    "v2 day": V2Answer,
    "v2 bad date": V2Answer,
    "v2 bad expire": V2Answer,
    "v2 all types": V2AllTypesAnswer,
    "v2 all types bad": V2AllTypesAnswer,
    "v1 finished": V1Answer,
    "v1 running": V1Answer,
    "v1 not exists": V1Answer,
    "v1 error": V1Answer,
    "v1 bad date": V1Answer,
    "v1 bad expire": V1Answer,
    "no credential": ErrorBody,
    "bad credential": ErrorBody,
}


def test_every_answer_reads_into_growingios_fields(world: World) -> None:
    got = answers(world)
    assert set(got) == set(SHAPES)
    for name, (status, body) in got.items():
        try:
            strict(SHAPES[name], body)
        except AssertionError as e:
            raise AssertionError(f"{name} (HTTP {status}): {e}") from None
    statuses = {name: body.get("status") for name, (_, body) in got.items()}
    assert statuses["v2 finished"] == statuses["v1 finished"] == "FINISHED"
    assert statuses["v2 running"] == statuses["v1 running"] == "RUNNING"
    assert statuses["v2 not exists"] == statuses["v1 not exists"] == "NOT_EXISTS"
    assert statuses["v2 error"] == statuses["v1 error"] == "ERROR"
    assert len(got["v2 finished"][1]["downloadLinks"]) == 1
    assert len(got["v1 finished"][1]["downlinks"]) == len(V1_TYPE_NAMES)
    assert got["no credential"][0] == got["bad credential"][0] == 401


def test_rate_limited_answers_read_into_growingios_fields(
    make_world: Callable[..., World],
) -> None:
    w = make_world(rate_limit=0.5, rate_burst=1, rate_queue=0)
    w.finish("page", PAST)
    h = {"Authorization": w.token}
    for path, cls in (
        (f"/v2/insights/hour/page/{w.project.ai}/2025011009.json", V2Answer),
        (f"/v2/insights/hour/{w.project.ai}/2025011009.json", V2AllTypesAnswer),
        (f"/insights/{w.project.ai}/2025011009.json", V1Answer),
    ):
        w.clock.now += 10_000  # a fresh bucket
        assert w.client.get(path, headers=h).status_code == 200
        r = w.client.get(path, headers=h)
        assert r.status_code == 429 and r.headers["retry-after"]
        strict(cls, r.json())


@pytest.mark.parametrize("flag", ["true", "1", "yes", "TRUE"])
def test_manifest_links_when_asked(world: World, flag: str) -> None:
    world.finish("page", PAST)
    r = world.client.get(
        f"/v2/insights/hour/page/{world.project.ai}/2025011009.json?manifest={flag}",
        headers=world.headers(),
    )
    body = r.json()
    assert list(body)[-1] == "manifest" and len(body["manifest"]) == 1
    with pytest.raises(AssertionError, match="Unrecognized field"):
        strict(V2Answer, body)  # the strict check does see an extra field
