"""Object keys of export parts and manifests.

A revision's prefix and manifest key are pure functions of (project, type, hour, revision);
a part's key also of the attempt that wrote it, so an attempt that lost its lease can never
overwrite a part of the attempt that committed (docs/design.md, decision 9).
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


# Odd, so that revision -> revision * _STEP mod 2**16 is one-to-one (and scatters them).
_STEP = 0x9E37


def export_prefix(ai: str, version: str, name: str, hour_ms: int, revision: int) -> str:
    """`{4hex}_{ai}_{name}[_v2]_{UTC yyyyMMddHHmm}`; every revision of an hour has its own.

    The 4 hex digits are a hash of the hour's export (a start that differs between hours
    and types) plus revision x an odd step, modulo 2**16: revisions of one hour below 65,536
    apart never share a prefix, so never a `_manifest.json` (two hashes of the revision
    itself would, about twice in a year-long backfill).
    """
    _identity(ai, version, name, hour_ms, revision)  # checks the version
    slot = hashlib.sha256(f"{ai}|{version}|{name}|{hour_ms}".encode()).digest()
    hex4 = f"{(int.from_bytes(slot[:2], 'big') + revision * _STEP) % 0x10000:04x}"
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
