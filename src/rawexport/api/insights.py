"""Export status and download links of a request window, shared by the v1 and v2 APIs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from rawexport.api.cache import Fresh
from rawexport.blobs import links
from rawexport.catalog import PENDING, Catalog, Job, JobStatus, Project
from rawexport.fsutil import hide_paths
from rawexport.timeutil import (
    HOUR_MS,
    Window,
    beijing,
    beijing_hour_label,
    hour_ceil,
    hour_floor,
)

FINISHED = "FINISHED"
RUNNING = "RUNNING"
NOT_EXISTS = "NOT_EXISTS"
ERROR = "ERROR"
STATUSES = (FINISHED, RUNNING, NOT_EXISTS, ERROR)

# Why an hour is NOT_EXISTS. A window drops hours before enablement or past retention and
# counts future hours as RUNNING as long as it also covers the current hour or earlier.
DISABLED = "disabled"
BEFORE = "before_enabled"
EXPIRED = "past_retention"
FUTURE = "future"


@dataclass(frozen=True)
class HourStatus:
    status: str
    reason: str = ""  # set for NOT_EXISTS
    job: Job | None = None  # the finished revision served, or the job that failed
    error: str = ""


def hour_status(
    project: Project, version: str, hour_ms: int, jobs: Sequence[Job], now: int
) -> HourStatus:
    """Status of one (type, hour) from its non-preview jobs, newest revision first."""
    enabled = project.export_enabled and (version != "v1" or project.v1_enabled)
    if not enabled or project.export_since_ms is None:
        return HourStatus(NOT_EXISTS, DISABLED)
    if hour_ms < hour_ceil(project.export_since_ms):
        return HourStatus(NOT_EXISTS, BEFORE)
    if links.retained_until(hour_ms, project.retention_days) <= now:
        return HourStatus(NOT_EXISTS, EXPIRED)
    current = hour_floor(now)
    if hour_ms > current:
        return HourStatus(NOT_EXISTS, FUTURE)
    if hour_ms == current:
        return HourStatus(RUNNING)
    for job in jobs:
        if job.status == JobStatus.FINISHED:
            return HourStatus(FINISHED, job=job)
    if jobs and jobs[0].status == JobStatus.ERROR and not any(j.status in PENDING for j in jobs):
        # hide_paths: errors stored before they were recorded without paths
        return HourStatus(ERROR, job=jobs[0], error=hide_paths(jobs[0].error or "export failed"))
    return HourStatus(RUNNING)


@dataclass(frozen=True)
class Answer:
    """What a request gets: the window status and, when FINISHED, links per data type.

    `manifests` holds, per data type, signed links to the `_manifest.json` of every
    revision the answer links (empty hours included: their manifest says 0 rows).
    """

    status: str
    links: dict[str, list[str]]
    error: str = ""
    manifests: dict[str, list[str]] = field(default_factory=dict)

    def flat(self) -> list[str]:
        return [link for type_links in self.links.values() for link in type_links]

    def flat_manifests(self) -> list[str]:
        return [link for type_links in self.manifests.values() for link in type_links]


def fingerprint(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


@dataclass(frozen=True)
class _Kept:
    """A FINISHED answer as cached: what it said, and until when it may be said again."""

    answer: Answer
    # The answer holds for request clocks in [valid_from_ms, retained_ms): from when its
    # last hour closed (or an hour it left out fell out of retention) until the first of
    # its hours falls out of retention. Requests a little older than the answer use it too.
    valid_from_ms: int
    retained_ms: int
    until_ms: int | None  # when its links expire (None: it has no links)

    def holds(self, now: int, expire_minutes: int) -> bool:
        """It may answer a request asking links of `expire_minutes` at `now`: the clock
        is in its window, and its links keep half of the lifetime asked (if it has any)."""
        if not self.valid_from_ms <= now < self.retained_ms:
            return False
        if self.until_ms is not None:
            asked = min(now + expire_minutes * links.MINUTE_MS, self.retained_ms)
            if (self.until_ms - now) * 2 < asked - now:
                return False
        return True


class Insights:
    """Answers export requests from the catalog: one jobs query and one files query each.

    FINISHED answers are also kept in memory (api/cache.py: until the catalog changes
    through this process, and at most `cache_seconds`) and given again while their links
    keep half of the asked lifetime, the rule the catalog's issued links follow too.
    """

    def __init__(
        self, catalog: Catalog, base_url: str, secret: str, cache_seconds: float = 0.0
    ) -> None:
        self.catalog = catalog
        self.base_url = base_url.rstrip("/")
        self.secret = secret
        self._kept: Fresh[_Kept] = Fresh(lambda: catalog.generation, cache_seconds)

    def cached(
        self, project: Project, version: str, scope: str, expire_minutes: int, now: int
    ) -> Answer | None:
        """The answer `answer` would give now, when it is in memory and still true."""
        kept = self._kept.get((project, version, scope))
        if kept is None or not kept.holds(now, expire_minutes):
            return None
        return kept.answer

    def aging(self, project: Project, version: str, scope: str) -> bool:
        """The kept answer is past half its life (api/cache.py): read it again ahead."""
        return self._kept.aging((project, version, scope))

    def times(
        self, project: Project, version: str, scope: str, answer: Answer
    ) -> tuple[tuple[float, float], _Kept] | None:
        """The cache times (api/cache.Fresh.times) of the kept `answer`, and its entry."""
        kept = self._kept.get((project, version, scope))
        times = self._kept.times((project, version, scope))
        if kept is None or kept.answer is not answer or times is None:
            return None
        return times, kept

    def answer(
        self,
        project: Project,
        version: str,
        types: Sequence[str],
        window: Window,
        expire_minutes: int,
        scope: str,
        now: int,
    ) -> Answer:
        generation = self.catalog.generation  # before the reads: a write meanwhile drops it
        empty: dict[str, list[str]] = {t: [] for t in types}
        jobs = self.catalog.hour_jobs(project.id, version, window.start_ms, window.end_ms)
        kept: list[tuple[str, int, HourStatus]] = []
        expired = 0  # the last retention end among the hours left out
        for hour in window.hours:
            for t in types:
                hs = hour_status(project, version, hour, jobs.get((t, hour), ()), now)
                if hs.reason == DISABLED:
                    return Answer(NOT_EXISTS, empty)
                if hs.reason == EXPIRED:
                    expired = links.retained_until(hour, project.retention_days)
                elif hs.reason != BEFORE:
                    kept.append((t, hour, hs))
        if all(hs.reason == FUTURE for _, _, hs in kept):
            return Answer(NOT_EXISTS, empty)
        failed = [(t, h, hs) for t, h, hs in kept if hs.status == ERROR]
        if failed:
            t, h, hs = failed[0]
            single = len(types) == 1 and len(window.hours) == 1
            message = hs.error if single else f"{t} {beijing_hour_label(h)}: {hs.error}"
            return Answer(ERROR, empty, message)
        if any(hs.status != FINISHED for _, _, hs in kept):
            return Answer(RUNNING, empty)
        served = [(t, h, hs.job) for t, h, hs in kept if hs.job is not None]
        day = beijing(window.start_ms).strftime("%Y%m%d") if version == "v1" else None
        if len(window.hours) == 1:
            day = None
        parts, manifests, until = self._links(
            project, served, types, expire_minutes, scope, now, day
        )
        answer = Answer(FINISHED, parts, manifests=manifests)
        retained = min(links.retained_until(h, project.retention_days) for _, h, _ in served)
        valid_from = max(expired, max(h for _, h, _ in served) + HOUR_MS)
        entry = _Kept(answer, valid_from, retained, until)
        self._kept.put((project, version, scope), entry, generation)
        return answer

    def _links(
        self,
        project: Project,
        served: list[tuple[str, int, Job]],
        types: Sequence[str],
        expire_minutes: int,
        scope: str,
        now: int,
        day: str | None = None,
    ) -> tuple[dict[str, list[str]], dict[str, list[str]], int | None]:
        """Part links and manifest links per data type, reused while the cached ones live,
        and when they expire (None when there are none).

        Part links carry `links.link_path` of their key (shaped for the base URL); with
        `day` (a v1 day, Beijing yyyyMMdd) each type's parts of the day's 24 hours get one
        day prefix and part numbers unique within the day, as GrowingIO's v1 day links had.
        """
        files = self.catalog.files_of(job.id for _, _, job in served)
        ordered = sorted(served, key=lambda s: (types.index(s[0]), s[1]))
        entries = [(t, h, f.key) for t, h, job in ordered for f in files[job.id]]
        manifest_entries = [(t, h, job.manifest_key) for t, h, job in ordered if job.manifest_key]
        out: dict[str, list[str]] = {t: [] for t in types}
        manifests: dict[str, list[str]] = {t: [] for t in types}
        if not entries and not manifest_entries:
            return out, manifests, None
        # Everything that shapes a link is in the fingerprint: the keys, the base URL and
        # the link shape; the marker keeps rows cached by older versions unmatched.
        fp = fingerprint(
            [f"links:2 {self.base_url} {day or ''}"]
            + [k for _, _, k in entries]
            + ["m:" + k for _, _, k in manifest_entries]
        )
        # Cached links are handed out again (same links, expiry not extended) only while
        # they keep at least half of the lifetime this request asks for: `expire=1` then
        # `expire=10080` a minute later gets new week-long links, not ones about to expire.
        asked = min(
            links.expiry(now, expire_minutes, h, project.retention_days) for _, h, _ in served
        )
        cached = self.catalog.issued(project.id, scope, fp, now)
        if cached is not None and (cached[1] - now) * 2 < asked - now:
            cached = None
        if cached is not None and isinstance(cached[0], dict) and "links" in cached[0]:
            saved_links, saved_manifests = cached[0]["links"], cached[0]["manifest"]
            return (
                {t: list(saved_links.get(t, [])) for t in types},
                {t: list(saved_manifests.get(t, [])) for t in types},
                cached[1],
            )
        until = None
        numbers: dict[str, int] = {}
        for target, group, shaped in ((out, entries, True), (manifests, manifest_entries, False)):
            for t, hour, key in group:
                expires = links.expiry(now, expire_minutes, hour, project.retention_days)
                until = expires if until is None else min(until, expires)
                path = key
                if shaped:
                    if day is not None:
                        path = links.day_alias(key, project.ai, t, day, numbers.get(t, 0))
                        numbers[t] = numbers.get(t, 0) + 1
                    path = links.link_path(path, self.base_url)
                target[t].append(links.make_link(self.base_url, self.secret, path, expires))
        assert until is not None
        # `keys` names the objects behind the links, so the sweeper keeps them while they live.
        keys = ["/" + k for _, _, k in entries] + ["/" + k for _, _, k in manifest_entries]
        payload = {"links": out, "manifest": manifests, "keys": keys}
        self.catalog.save_issued(project.id, scope, fp, payload, until, now)
        return out, manifests, until
