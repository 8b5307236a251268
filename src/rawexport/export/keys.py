"""Object keys of export parts and manifests.

A revision's prefix and manifest key are pure functions of (project, type, hour, revision);
a part's key also of the attempt that wrote it, so an attempt that lost its lease can never
overwrite a part of the attempt that committed (DESIGN decision 9).
"""

from __future__ import annotations

import hashlib
import uuid

from rawexport.timeutil import utc_key_stamp

# Fixed forever: part uuids derive from it.
_PART_NAMESPACE = uuid.UUID("74d27f3c-5e3e-5ba2-a847-7cba6c732e2c")
_VERSIONS = ("v2", "v1")
# Scratch objects of exports run on a cluster: `_work/{prefix}/a{attempt}/...`, never linked.
SCRATCH = "_work"


def _identity(ai: str, version: str, name: str, hour_ms: int, revision: int) -> str:
    if version not in _VERSIONS:
        raise ValueError(f"unknown export version {version!r}")
    return f"{ai}|{version}|{name}|{hour_ms}|{revision}"


def export_prefix(ai: str, version: str, name: str, hour_ms: int, revision: int) -> str:
    """`{4hex}_{ai}_{name}[_v2]_{UTC yyyyMMddHHmm}`; a new revision gets a new 4hex."""
    ident = _identity(ai, version, name, hour_ms, revision)
    hex4 = hashlib.sha256(ident.encode()).hexdigest()[:4]
    suffix = "_v2" if version == "v2" else ""
    return f"{hex4}_{ai}_{name}{suffix}_{utc_key_stamp(hour_ms)}"


def part_key(
    prefix: str,
    version: str,
    ai: str,
    name: str,
    hour_ms: int,
    revision: int,
    part: int,
    *,
    attempt: int,
) -> str:
    """`{prefix}/part-NNNNN-{uuid}[-c000].csv.gz` (Spark's naming, which clients parse).

    The uuid also derives from the attempt (the job's claim count, its fencing token): every
    attempt writes its own keys, and only the one that commits is named by the catalog.
    """
    ident = _identity(ai, version, name, hour_ms, revision)
    part_uuid = uuid.uuid5(_PART_NAMESPACE, f"{ident}|{part}|{attempt}")
    tail = "-c000.csv.gz" if version == "v2" else ".csv.gz"
    return f"{prefix}/part-{part:05d}-{part_uuid}{tail}"


def manifest_key(prefix: str) -> str:
    return f"{prefix}/_manifest.json"
