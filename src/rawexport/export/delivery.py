"""Push delivery: each hour's newest finished revision copied into a project's destinations.

A delivery is a step of the export pipeline: its coordinator (a delivery worker thread,
holding the delivery's lease) submits one task per part to the node's runner (this
process, or the Dask cluster), each task copying a committed gzip CSV part to the
destination as it is or converted to Parquet; then the coordinator writes the revision's
`_manifest.json`, then its `_SUCCESS` marker, so a reader that waits for the marker never
sees a partial hour. Keys are the revision's own (`destinations.render`): a retry, or a run
after a kill -9, writes the same keys again (at least once, idempotent). Once the new
revision is complete, the manifests of the hour's older delivered revisions are marked
superseded. A failed attempt is retried with backoff; `delivery_pause_after` failures in a
row pause the destination with the last failure as its reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rawexport.blobs import BlobStore
from rawexport.catalog import Catalog, Delivery, Destination, LeaseLost
from rawexport.export.csvsql import columns, read_parts, typed_columns
from rawexport.export.destinations import Target, render, target_of
from rawexport.export.lease import LeaseKeeper
from rawexport.export.pipeline import gather
from rawexport.export.plan import parse_size
from rawexport.export.reading import connect
from rawexport.export.runners import Runner, Where
from rawexport.export.worker import backoff_ms, owner_id
from rawexport.fsutil import hide_paths
from rawexport.metrics import Metrics
from rawexport.periodic import Periodic
from rawexport.secretbox import SecretBox
from rawexport.settings import Settings
from rawexport.timeutil import beijing_hour_label, now_ms
from rawexport.types import JobStatus

log = logging.getLogger("rawexport.delivery")

MANIFEST, SUCCESS = "_manifest.json", "_SUCCESS"
EXTENSIONS = {"csv": ".csv.gz", "parquet": ".parquet"}
# Rows per Parquet row group: a 64 MiB part (~1 M page rows) makes four groups of a few
# tens of MB, a size query engines read well and DuckDB's writer builds in its memory.
ROW_GROUP_ROWS = 250_000
# DuckDB's share of a delivery task's budget (duckdb_memory_limit): converting is all it
# does. With the export's 40% its writer spills, and a part took 4x as long (measured).
CONVERT_SHARE = 0.8
DELIVERED, LOST, RETRYING, PAUSED, SUPERSEDED = (
    "delivered",
    "lost",
    "retrying",
    "paused",
    "superseded",
)


@dataclass(frozen=True)
class Shipment:
    """One committed part to deliver, and the key it gets at the destination."""

    part: int
    source_key: str
    rows: int
    dest_key: str


@dataclass(frozen=True)
class Delivered:
    part: int
    key: str
    rows: int
    bytes: int
    sha256: str


def to_parquet(
    version: str, name: str, src: Path, dest: Path, work: Path, memory_limit: str
) -> int:
    """The rows of one gzip CSV part written to dest as Parquet (typed as `rawexport pull
    --parquet` types them, zstd); returns how many. Rows keep their order."""
    con = connect(work, int(parse_size(memory_limit) * CONVERT_SHARE), 2)
    try:
        con.execute("SET preserve_insertion_order = true")  # rows in the part's order
        got: Any = con.execute(
            f"COPY (SELECT {typed_columns(version, name)} FROM {read_parts(version, name, [src])}) "
            f"TO '{dest.as_posix()}' (FORMAT parquet, COMPRESSION zstd, "
            f"ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
        ).fetchone()
        return int(got[0])
    finally:
        con.close()


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def deliver_part_task(
    where: Where,
    target: Target,
    format: str,
    version: str,
    name: str,
    memory_limit: str,
    item: Shipment,
) -> Delivered:
    """One part copied (csv) or converted (parquet) to the destination under its key."""
    ws = where.workspace()
    Path(ws.tmp_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="deliver-", dir=ws.tmp_dir))
    try:
        src = work / "part.csv.gz"
        ws.blobs.fetch(item.source_key, src)
        out, rows = src, item.rows
        if format == "parquet":
            out = work / "part.parquet"
            rows = to_parquet(version, name, src, out, work, memory_limit)
        size, sha256 = _digest(out)
        target.open().put(item.dest_key, out)
        return Delivered(item.part, item.dest_key.rsplit("/", 1)[-1], rows, size, sha256)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def manifest(
    d: Delivery, dest: Destination, ai: str, location: str, files: list[Delivered], now: int
) -> bytes:
    """The `_manifest.json` of a delivered revision."""
    body: dict[str, Any] = {
        "ai": ai,
        "version": d.version,
        "dataType": d.data_type,
        "exportHour": beijing_hour_label(d.hour_ms),
        "hourStartMs": d.hour_ms,
        "revision": d.revision,
        "format": dest.format,
        "columns": list(columns(d.version, d.data_type)),
        "location": location,
        "files": [
            {"key": f.key, "part": f.part, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256}
            for f in files
        ],
        "rows": sum(f.rows for f in files),
        "bytes": sum(f.bytes for f in files),
        "exportedMs": d.finished_ms,
        "deliveredMs": now,
        "supersededBy": None,
    }
    return json.dumps(body, ensure_ascii=False, indent=1).encode()


def mark_superseded(store: BlobStore, old: Delivery, by: Delivery, location: str) -> None:
    """Say in an older revision's manifest which revision replaced it (if it is still there)."""
    if old.location is None:
        return
    key = old.location + MANIFEST
    work = Path(tempfile.mkdtemp(prefix="manifest-"))
    try:
        try:
            store.fetch(key, work / "m.json")
        except FileNotFoundError:
            return
        body = json.loads((work / "m.json").read_text())
        body["supersededBy"] = {"revision": by.revision, "location": location}
        store.put_bytes(key, json.dumps(body, ensure_ascii=False, indent=1).encode())
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Deliverer:
    """Plans deliveries and runs claimed ones: committed parts -> destination -> catalog."""

    settings: Settings
    catalog: Catalog
    blobs: BlobStore
    box: SecretBox
    runner: Runner
    clock: Callable[[], int] = now_ms
    metrics: Metrics | None = None

    def plan(self) -> int:
        return self.catalog.plan_deliveries(self.clock())

    def run_one(self, owner: str) -> bool:
        """Claim and run the next due delivery; False when there was none."""
        lease_ms = int(self.settings.lease_seconds * 1000)
        d = self.catalog.claim_delivery(owner, self.clock(), lease_ms)
        if d is None:
            return False
        self.execute(d, owner)
        return True

    def drain(self, owner: str) -> int:
        """Plan, then run due deliveries until none is left; returns how many ran."""
        self.plan()
        ran = 0
        while self.run_one(owner):
            ran += 1
        return ran

    def execute(self, d: Delivery, owner: str) -> str:
        lease_ms = int(self.settings.lease_seconds * 1000)
        keeper = LeaseKeeper(
            lambda: self.catalog.renew_delivery(d, owner, self.clock(), lease_ms),
            lease_ms,
            f"delivery {d.id}",
        )
        with keeper:
            try:
                outcome = self._execute(d, owner, keeper)
            except LeaseLost:
                log.warning("delivery %s lost its lease", d.id)
                outcome = LOST
            except Exception as e:  # recorded on the delivery, never kills the loop
                outcome = self._record_failure(d, owner, e)
        if self.metrics is not None:
            self.metrics.deliveries.labels(outcome).inc()
        return outcome

    def _newer_revision(self, d: Delivery) -> bool:
        by_hour = self.catalog.hour_jobs(d.project_id, d.version, d.hour_ms, d.hour_ms + 1)
        return any(
            j.status == JobStatus.FINISHED and j.revision > d.revision
            for j in by_hour.get((d.data_type, d.hour_ms), [])
        )

    def _execute(self, d: Delivery, owner: str, keeper: LeaseKeeper) -> str:
        dest = self.catalog.destination_by_id(d.destination_id)
        if dest is None:
            return LOST  # removed meanwhile (its deliveries with it)
        if self._newer_revision(d):  # a newer revision of the hour is delivered instead
            keeper.stop()
            self.catalog.supersede_delivery(d, owner, self.clock())
            return SUPERSEDED
        ai = self.catalog.project_by_id(d.project_id).ai
        target = target_of(dest, self.box)
        location = render(dest.key_template, ai, d.version, d.data_type, d.hour_ms, d.revision)
        ext = EXTENSIONS[dest.format]
        items = [
            Shipment(f.part, f.key, f.rows, f"{location}part-{f.part:05d}{ext}")
            for f in self.catalog.files(d.job_id)
        ]
        with self.runner.executor() as pool:
            futures = [
                pool.submit(
                    deliver_part_task,
                    self.runner.where,
                    target,
                    dest.format,
                    d.version,
                    d.data_type,
                    self.settings.duckdb_memory_limit,
                    item,
                )
                for item in items
            ]
            done = gather(futures, keeper.lost)
        store = target.open()
        now = self.clock()
        # The marker only once every part and the manifest are there.
        store.put_bytes(location + MANIFEST, manifest(d, dest, ai, location, done, now))
        store.put_bytes(location + SUCCESS, b"")
        previous = self.catalog.delivered_before(d)
        for old in previous:
            mark_superseded(store, old, d, location)
        keeper.stop()
        self.catalog.complete_delivery(
            d,
            owner,
            location=location,
            files=len(done),
            rows=sum(f.rows for f in done),
            size=sum(f.bytes for f in done),
            superseded=[old.id for old in previous],
            now=self.clock(),
        )
        log.info(
            "delivered %s/%s/%s %s r%s to %s: %d files",
            ai,
            d.version,
            d.data_type,
            beijing_hour_label(d.hour_ms),
            d.revision,
            dest.name,
            len(done),
            extra={"event": "delivery", "delivery_id": d.id, "destination": dest.name},
        )
        return DELIVERED

    def _record_failure(self, d: Delivery, owner: str, e: Exception) -> str:
        message = hide_paths(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        now = self.clock()
        retry_at = now + backoff_ms(
            d.attempts, self.settings.retry_base_seconds, self.settings.retry_max_seconds
        )
        try:
            paused = self.catalog.fail_delivery(
                d,
                owner,
                message,
                retry_at=retry_at,
                pause_after=self.settings.delivery_pause_after,
                now=now,
            )
        except LeaseLost:
            return LOST
        log.warning(
            "delivery %s failed%s: %s",
            d.id,
            " (destination paused)" if paused else "",
            message,
            extra={"event": "delivery_failed", "delivery_id": d.id},
        )
        return PAUSED if paused else RETRYING


class DeliveryLoops:
    """A node's delivery loops: the planner, and `delivery_workers` threads delivering."""

    def __init__(self, deliverer: Deliverer, settings: Settings) -> None:
        self.deliverer = deliverer
        self.planner = Periodic("delivery-planner", deliverer.plan, settings.delivery_interval)
        self.workers = Periodic(
            "delivery", self._run_one, 0.5, threads=max(0, settings.delivery_workers)
        )
        self._owner = threading.local()  # each thread leases as an owner of its own

    def _run_one(self) -> bool:
        owner = getattr(self._owner, "id", None)
        if owner is None:
            owner = self._owner.id = owner_id()
        return self.deliverer.run_one(owner)

    def start(self) -> None:
        self.planner.start()
        self.workers.start()

    def stop(self) -> None:
        self.planner.stop()
        self.workers.stop()
