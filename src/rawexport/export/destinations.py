"""Where push delivery writes: a customer's S3-compatible bucket or a directory, and the
keys an hour's revision gets there.

A destination's key template names the directory of one revision of one hour:
`{ai}`, `{version}`, `{data_type}`, `{yyyy}`, `{MM}`, `{dd}`, `{HH}` (the Beijing hour, as
GrowingIO names export hours) and `{revision}`, which every template must contain: a
revision's files never mix with another's, so a retry or a kill -9 mid-delivery can leave
an incomplete directory but never a wrong one (its `_SUCCESS` marker comes last).
"""

from __future__ import annotations

import json
import re
import string
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rawexport.blobs import BlobStore
from rawexport.blobs.local import LocalBlobStore, check_key
from rawexport.blobs.s3 import S3BlobStore
from rawexport.catalog import Catalog, Destination, DestinationError
from rawexport.secretbox import SecretBox
from rawexport.timeutil import beijing, beijing_hour_label, now_ms

TEMPLATES = {
    "default": "{ai}/{version}/{data_type}/{yyyy}{MM}{dd}/{HH}/r{revision}/",
    # Hive-style partitions (Spark, Hive, Athena, DuckDB's hive_partitioning).
    "hive": "data_type={data_type}/dt={yyyy}-{MM}-{dd}/hour={HH}/revision={revision}/",
}
FIELDS = ("ai", "version", "data_type", "yyyy", "MM", "dd", "HH", "revision")
FORMATS = ("csv", "parquet")
KINDS = ("s3", "dir")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_template(template: str, versions: list[str]) -> str:
    """The template (a preset's name resolved), or DestinationError saying what is wrong."""
    template = TEMPLATES.get(template, template)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise DestinationError(f"bad key template {template!r}: {e}") from None
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise DestinationError(
            f"unknown key template fields: {', '.join(unknown)} (known: {', '.join(FIELDS)})"
        )
    if "revision" not in fields:
        raise DestinationError(
            "the key template must contain {revision}: each revision of an hour is "
            "delivered under keys of its own"
        )
    if len(versions) > 1 and "version" not in fields:
        raise DestinationError("a destination of v1 and v2 needs {version} in its template")
    if not template.endswith("/"):
        template += "/"
    sample = render(template, "ai", "v2", "page", 0, 1)
    try:
        check_key(sample + "x")
    except ValueError:
        raise DestinationError(f"the key template {template!r} makes bad keys") from None
    return template


def render(template: str, ai: str, version: str, data_type: str, hour_ms: int, rev: int) -> str:
    """The directory (ending in /) of one revision of one hour."""
    t = beijing(hour_ms)
    return template.format(
        ai=ai,
        version=version,
        data_type=data_type,
        yyyy=f"{t.year:04d}",
        MM=f"{t.month:02d}",
        dd=f"{t.day:02d}",
        HH=f"{t.hour:02d}",
        revision=rev,
    )


@dataclass(frozen=True)
class Target:
    """How to open a destination's store (picklable: tasks on Dask workers open it too).
    credentials: opened, for this run only; never logged (repr hides them)."""

    kind: str
    location: str  # s3://bucket/prefix, or a directory
    endpoint_url: str = ""
    region: str = ""
    credentials: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"Target({self.kind}, {self.location})"

    def open(self) -> BlobStore:
        if self.kind == "dir":
            return LocalBlobStore(Path(self.location))
        return S3BlobStore.from_url(
            self.location,
            endpoint_url=self.endpoint_url or None,
            region=self.region or None,
            credentials=dict(self.credentials) or None,
            max_attempts=3,
            connect_timeout=5,
            read_timeout=30,
        )


def target_of(dest: Destination, box: SecretBox) -> Target:
    """The target of a destination, its credentials opened with box."""
    creds: dict[str, str] = {}
    if dest.credentials:
        creds = json.loads(box.open(dest.credentials))
    return Target(
        kind=dest.kind,
        location=str(dest.config["location"]),
        endpoint_url=str(dest.config.get("endpoint_url", "")),
        region=str(dest.config.get("region", "")),
        credentials=tuple(sorted(creds.items())),
    )


def destination_config(
    *,
    name: str,
    kind: str,
    location: str,
    format: str,
    template: str,
    versions: list[str],
    data_types: list[str] | None,
    endpoint_url: str = "",
    region: str = "",
) -> tuple[str, dict[str, Any]]:
    """(key template, config) of a new destination, checked; DestinationError if wrong."""
    from rawexport.schema import DATA_TYPES, V1_TYPES

    if not _NAME.fullmatch(name):
        raise DestinationError(
            "a destination name is 1-64 letters, digits, '.', '_' or '-' (not first)"
        )
    if kind not in KINDS:
        raise DestinationError(f"a destination is s3 or dir, not {kind!r}")
    if format not in FORMATS:
        raise DestinationError(f"the format is csv or parquet, not {format!r}")
    bad = [v for v in versions if v not in ("v1", "v2")]
    if not versions or bad:
        raise DestinationError("versions are v2 and/or v1")
    if data_types is not None:
        known = set(DATA_TYPES) | set(V1_TYPES)
        unknown = [t for t in data_types if t not in known]
        if unknown or not data_types:
            raise DestinationError(f"unknown data types: {', '.join(unknown) or '(none)'}")
    if kind == "s3":
        parts = urlsplit(location)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise DestinationError(f"an s3 destination is s3://bucket/prefix, not {location!r}")
    else:
        if not Path(location).is_absolute():
            raise DestinationError(f"a dir destination is an absolute path, not {location!r}")
    config: dict[str, Any] = {"location": location, "versions": versions, "data_types": data_types}
    if endpoint_url:
        config["endpoint_url"] = endpoint_url
    if region:
        config["region"] = region
    return check_template(template, versions), config


def describe(dest: Destination, catalog: Catalog, now: int | None = None) -> dict[str, Any]:
    """A destination as `destination list` and the console show it (never its credentials);
    its lag is counted to `now` (default: the time now)."""
    summary = catalog.delivery_summary(dest.id)
    now = now_ms() if now is None else now
    return {
        "name": dest.name,
        "kind": dest.kind,
        "location": dest.config.get("location"),
        "endpointUrl": dest.config.get("endpoint_url"),
        "region": dest.config.get("region"),
        "format": dest.format,
        "keyTemplate": dest.key_template,
        "versions": dest.versions,
        "dataTypes": dest.data_types,
        "startHour": beijing_hour_label(dest.start_hour_ms),
        "credentials": "set" if dest.credentials else "none",
        "state": dest.state,
        "pausedReason": dest.paused_reason,
        "failuresInARow": dest.failures,
        "deliveries": summary.counts,
        "lastDeliveredHour": (
            None if summary.last_hour_ms is None else beijing_hour_label(summary.last_hour_ms)
        ),
        "lagSeconds": (
            0 if summary.oldest_pending_ms is None else (now - summary.oldest_pending_ms) // 1000
        ),
    }


def probe(target: Target) -> str:
    """Write, read back and delete a probe object; what was done (an error if it fails)."""
    store = target.open()
    key = f"_rawexport-probe-{uuid.uuid4().hex}"
    store.put_bytes(key, b"rawexport probe")
    try:
        got = store.stat(key)
        if got is None or got.size != len(b"rawexport probe"):
            raise OSError(f"the probe object {key} did not read back")
    finally:
        store.delete(key)
    return f"wrote, read back and deleted {key} at {target.location}"


def add_destination(
    catalog: Catalog,
    box: SecretBox,
    project_id: int,
    name: str,
    *,
    kind: str,
    location: str,
    start_hour_ms: int,
    now: int,
    format: str = "csv",
    template: str = "default",
    versions: tuple[str, ...] = ("v2",),
    data_types: list[str] | None = None,
    endpoint_url: str = "",
    region: str = "",
    credentials: dict[str, str] | None = None,
) -> Destination:
    """A new destination, checked (DestinationError), its credentials sealed with box."""
    key_template, config = destination_config(
        name=name,
        kind=kind,
        location=location,
        format=format,
        template=template,
        versions=list(versions),
        data_types=data_types,
        endpoint_url=endpoint_url,
        region=region,
    )
    return catalog.create_destination(
        project_id,
        name,
        kind=kind,
        format=format,
        key_template=key_template,
        config=config,
        credentials=box.seal(json.dumps(credentials)) if credentials else None,
        start_hour_ms=start_hour_ms,
        now=now,
    )
