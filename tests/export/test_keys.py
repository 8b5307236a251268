"""Export object keys: shapes clients parse, determinism, revisions, attempts."""

from __future__ import annotations

import re

import pytest

from rawexport.export.keys import export_prefix, manifest_key, part_key
from rawexport.timeutil import parse_hour_arg

AI = "0a1b2c3d4e5f6a7b"
HOUR = parse_hour_arg("2020113019")  # Beijing 19:00 = UTC 11:00
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def test_v2_prefix_and_part_shape() -> None:
    prefix = export_prefix(AI, "v2", "custom_event", HOUR, 0)
    assert re.fullmatch(rf"[0-9a-f]{{4}}_{AI}_custom_event_v2_202011301100", prefix)
    key = part_key(prefix, "v2", AI, "custom_event", HOUR, 0, 3, attempt=1)
    assert re.fullmatch(rf"{prefix}/part-00003-{UUID}-c000\.csv\.gz", key)


def test_v1_prefix_and_part_shape() -> None:
    prefix = export_prefix(AI, "v1", "action_tag", HOUR, 0)
    assert re.fullmatch(rf"[0-9a-f]{{4}}_{AI}_action_tag_202011301100", prefix)
    key = part_key(prefix, "v1", AI, "action_tag", HOUR, 0, 12, attempt=1)
    assert re.fullmatch(rf"{prefix}/part-00012-{UUID}\.csv\.gz", key)


def test_manifest_key() -> None:
    assert (
        manifest_key("abcd_x_page_v2_202011301100") == "abcd_x_page_v2_202011301100/_manifest.json"
    )


def test_keys_are_deterministic() -> None:
    a = export_prefix(AI, "v2", "page", HOUR, 2)
    assert a == export_prefix(AI, "v2", "page", HOUR, 2)
    key = part_key(a, "v2", AI, "page", HOUR, 2, 0, attempt=1)
    assert key == part_key(a, "v2", AI, "page", HOUR, 2, 0, attempt=1)


def _uuid(key: str) -> str:
    m = re.fullmatch(rf"[^/]+/part-\d{{5}}-({UUID})(?:-c000)?\.csv\.gz", key)
    assert m, key
    return m.group(1)


def test_every_identity_field_changes_the_part_uuid() -> None:
    """Like with like: the uuid alone, parsed as clients do, changes with each field."""
    prefix = export_prefix(AI, "v2", "page", HOUR, 1)
    base = _uuid(part_key(prefix, "v2", AI, "page", HOUR, 1, 0, attempt=1))
    variants = {
        "ai": ("f" * 16, "v2", "page", HOUR, 1, 0, 1),
        "version": (AI, "v1", "page", HOUR, 1, 0, 1),
        "name": (AI, "v2", "visit", HOUR, 1, 0, 1),
        "hour": (AI, "v2", "page", HOUR + 3_600_000, 1, 0, 1),
        "revision": (AI, "v2", "page", HOUR, 2, 0, 1),
        "part": (AI, "v2", "page", HOUR, 1, 1, 1),
        "attempt": (AI, "v2", "page", HOUR, 1, 0, 2),
    }
    seen = {base}
    for field, (ai, version, name, hour, rev, part, attempt) in variants.items():
        # The same prefix for every variant: only the uuid can tell them apart.
        uid = _uuid(part_key(prefix, version, ai, name, hour, rev, part, attempt=attempt))
        assert uid != base, field
        seen.add(uid)
    assert len(seen) == len(variants) + 1


def test_every_revision_of_an_hour_gets_its_own_prefix() -> None:
    # 4 hex digits: 65,536 revisions of one hour, all apart (their manifests too)
    for version, name in (("v2", "page"), ("v1", "action_tag")):
        prefixes = {export_prefix(AI, version, name, HOUR, rev) for rev in range(0x10000)}
        assert len(prefixes) == 0x10000
    # and hours and types start apart
    starts = {export_prefix(AI, "v2", t, HOUR + h * 3_600_000, 0)[:4] for t in
              ("page", "visit", "action") for h in range(8)}  # fmt: skip
    assert len(starts) > 20


def test_sdk_style_parse_of_the_key() -> None:
    # The Java SDK takes the text after the last `_` of the folder as UTC yyyyMMddHHmm.
    prefix = export_prefix(AI, "v2", "ads_track_activation", HOUR, 0)
    key = part_key(prefix, "v2", AI, "ads_track_activation", HOUR, 0, 0, attempt=1)
    folder = key.split("/")[0]
    assert folder.split("_")[-1] == "202011301100"
    assert folder.split("_")[1] == AI


def test_unknown_version_rejected() -> None:
    with pytest.raises(ValueError):
        export_prefix(AI, "v3", "page", HOUR, 0)
