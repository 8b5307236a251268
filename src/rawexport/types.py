"""Small value types shared across modules."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PartInfo:
    """One written gzip CSV part of an export revision."""

    part: int
    key: str
    rows: int
    bytes: int
    md5: str
    sha256: str


@dataclass(frozen=True)
class ExportResult:
    """What one export attempt wrote: its parts, and the key of the manifest its commit writes."""

    prefix: str
    manifest_key: str
    files: list[PartInfo]
    rows: int
    bytes: int
