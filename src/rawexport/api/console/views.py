"""What the console shows, read from the catalog: the day grid, project summaries, an hour.

Statuses come from `insights.hour_status`, the function the export API answers with, and
a cell of several types (the v1 row) is combined the way the API combines a window, so a
cell's colour is the status the API gives that hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rawexport.api.insights import (
    BEFORE,
    DISABLED,
    ERROR,
    EXPIRED,
    FINISHED,
    FUTURE,
    NOT_EXISTS,
    RUNNING,
    HourStatus,
    hour_status,
)
from rawexport.catalog import Catalog, FileRow, Job, Project
from rawexport.errors import UserError
from rawexport.schema import DATA_TYPE_NAMES, V1_TYPE_NAMES
from rawexport.timeutil import DAY_MS, HOUR_MS, beijing, beijing_day_start, hour_floor


class Refused(UserError):
    """A request the console answers with an error page; str() is the message shown."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status)


V1 = "v1"  # the grid's v1 row: every v1 type of the hour, as /insights/{ai}/{hour}.json


def kinds(project: Project) -> list[str]:
    """The grid's rows: the 10 v2 types, then v1 when the project has it."""
    return [*DATA_TYPE_NAMES, V1] if project.v1_enabled else list(DATA_TYPE_NAMES)


def version_types(kind: str) -> tuple[str, Sequence[str]]:
    return ("v1", V1_TYPE_NAMES) if kind == V1 else ("v2", (kind,))


def combine(statuses: Sequence[HourStatus]) -> tuple[str, str]:
    """(status, error) of several (type, hour) statuses, as `Insights.answer` decides."""
    if any(s.reason == DISABLED for s in statuses):
        return NOT_EXISTS, ""
    kept = [s for s in statuses if s.reason not in (BEFORE, EXPIRED)]
    if all(s.reason == FUTURE for s in kept):
        return NOT_EXISTS, ""
    failed = [s for s in kept if s.status == ERROR]
    if failed:
        return ERROR, failed[0].error
    if any(s.status != FINISHED for s in kept):
        return RUNNING, ""
    return FINISHED, ""


@dataclass(frozen=True)
class Cell:
    kind: str
    hour_ms: int
    status: str
    error: str = ""
    rows: int | None = None
    bytes: int | None = None
    revision: int | None = None
    finished_ms: int | None = None  # when the served revision committed (all types: the last)

    @property
    def css(self) -> str:
        """The colour class: an exported hour with no rows is told apart."""
        if self.status == FINISHED and self.rows == 0:
            return "empty"
        return self.status.lower()


Jobs = dict[str, dict[tuple[str, int], list[Job]]]  # version -> (type, hour) -> newest first


def cell(project: Project, kind: str, hour: int, jobs: Jobs, now: int) -> Cell:
    version, types = version_types(kind)
    of = jobs.get(version, {})
    statuses = [hour_status(project, version, hour, of.get((t, hour), ()), now) for t in types]
    status, error = combine(statuses)
    served = [s.job for s in statuses if s.job is not None and s.status == FINISHED]
    if status != FINISHED or len(served) != len(types):
        revision = statuses[0].job.revision if len(types) == 1 and statuses[0].job else None
        return Cell(kind, hour, status, error, revision=revision)
    return Cell(
        kind,
        hour,
        status,
        rows=sum(j.rows or 0 for j in served),
        bytes=sum(j.bytes or 0 for j in served),
        revision=served[0].revision if len(served) == 1 else None,
        finished_ms=max(j.finished_ms or 0 for j in served),
    )


def jobs_between(catalog: Catalog, project: Project, start: int, end: int) -> Jobs:
    """Non-preview jobs of [start, end), per version (v1 and v2 share type names)."""
    jobs = {"v2": catalog.hour_jobs(project.id, "v2", start, end)}
    if project.v1_enabled:
        jobs["v1"] = catalog.hour_jobs(project.id, "v1", start, end)
    return jobs


@dataclass(frozen=True)
class Grid:
    day_ms: int
    hours: list[int]
    rows: list[tuple[str, list[Cell]]]

    @property
    def running(self) -> bool:
        return any(c.status == RUNNING for _, cells in self.rows for c in cells)


def day_grid(catalog: Catalog, project: Project, day_ms: int, now: int) -> Grid:
    hours = list(range(day_ms, day_ms + DAY_MS, HOUR_MS))
    jobs = jobs_between(catalog, project, day_ms, day_ms + DAY_MS)
    rows = [(k, [cell(project, k, h, jobs, now) for h in hours]) for k in kinds(project)]
    return Grid(day_ms, hours, rows)


@dataclass(frozen=True)
class HourPoint:
    """One hour of a chart: events exported (all v2 types) and the export's lag."""

    hour_ms: int
    events: int | None  # None until every v2 type of the hour is FINISHED
    lag_s: float | None  # commit of the last type minus the hour's end


def hour_points(project: Project, hours: list[int], jobs: Jobs, now: int) -> list[HourPoint]:
    out = []
    for h in hours:
        cells = [cell(project, t, h, jobs, now) for t in DATA_TYPE_NAMES]
        if all(c.status == FINISHED for c in cells):
            events = sum(c.rows or 0 for c in cells)
            done = max(c.finished_ms or 0 for c in cells)
            out.append(HourPoint(h, events, max(0.0, (done - (h + HOUR_MS)) / 1000)))
        else:
            out.append(HourPoint(h, None, None))
    return out


@dataclass(frozen=True)
class Summary:
    """A project's line on the overview."""

    project: Project
    last_finished_ms: int | None  # start of the newest hour whose every row is FINISHED
    lag_s: float | None  # now minus the end of that hour
    error_hours: int  # hours (within retention) with a row in ERROR
    first_error_ms: int | None
    points: list[HourPoint] = field(default_factory=list)


def summary(catalog: Catalog, project: Project, now: int, chart_days: int = 3) -> Summary:
    current = hour_floor(now)
    start = max(current - project.retention_days * DAY_MS, 0)
    jobs = jobs_between(catalog, project, start, current)
    hours = list(range(start, current, HOUR_MS))
    last, errors = None, []
    for h in hours:
        cells = [cell(project, k, h, jobs, now) for k in kinds(project)]
        if any(c.status == ERROR for c in cells):
            errors.append(h)
        if all(c.status == FINISHED for c in cells):
            last = h
    chart_start = max(start, beijing_day_start(now) - (chart_days - 1) * DAY_MS)
    points = hour_points(project, list(range(chart_start, current, HOUR_MS)), jobs, now)
    lag = None if last is None else max(0.0, (now - (last + HOUR_MS)) / 1000)
    return Summary(project, last, lag, len(errors), errors[0] if errors else None, points)


@dataclass(frozen=True)
class Revision:
    job: Job
    current: bool  # the revision the API links
    files: list[FileRow]


@dataclass(frozen=True)
class HourDetail:
    cell: Cell
    revisions: list[tuple[str, list[Revision]]]  # per data type, newest revision first


def hour_detail(catalog: Catalog, project: Project, kind: str, hour: int, now: int) -> HourDetail:
    version, types = version_types(kind)
    jobs = catalog.hour_jobs(project.id, version, hour, hour + HOUR_MS)
    files = catalog.files_of(j.id for js in jobs.values() for j in js)
    per_type = []
    for t in types:
        js = jobs.get((t, hour), [])
        hs = hour_status(project, version, hour, js, now)
        served = hs.job if hs.status == FINISHED else None  # an ERROR's job is not served
        per_type.append(
            (t, [Revision(j, served is not None and j.id == served.id, files[j.id]) for j in js])
        )
    return HourDetail(cell(project, kind, hour, {version: jobs}, now), per_type)


def owned_key(catalog: Catalog, project: Project, kind: str, hour: int, key: str) -> bool:
    """True when key is a part or manifest of one of the hour's revisions of the project."""
    version, _ = version_types(kind)
    jobs = [j for js in catalog.hour_jobs(project.id, version, hour, hour + HOUR_MS).values()
            for j in js]  # fmt: skip
    if any(j.manifest_key == key for j in jobs):
        return True
    return any(f.key == key for fs in catalog.files_of(j.id for j in jobs).values() for f in fs)


# ---- template filters ----------------------------------------------------------------


def fmt_ms(ms: int | None) -> str:
    """A time (epoch ms) as Beijing time, as the console shows it."""
    return "" if ms is None else beijing(ms).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
