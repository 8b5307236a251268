"""Small value types shared across modules."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobStatus(StrEnum):
    """An export job's state in the catalog (stored as its value)."""

    QUEUED = "queued"  # waiting for a worker
    RUNNING = "running"  # held by a worker's lease
    RETRYING = "retrying"  # failed, to run again at next_attempt_ms
    FINISHED = "finished"  # committed: its files are the revision's
    ERROR = "error"  # failed for good; its error is shown
    SUPERSEDED = "superseded"  # finished, then replaced by a newer revision; files deleted


PENDING = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)  # not ended yet
WAITING = (JobStatus.QUEUED, JobStatus.RETRYING)  # not started reading the hour's files


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
