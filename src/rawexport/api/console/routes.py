"""The console's pages and actions: thin handlers over views, the catalog and export.actions.

Reads are GET; every change is a POST form with the session's CSRF token, answered with a
redirect back (so it works without JavaScript), except the one-time display of a new
secret. Operator actions call the code the CLI calls and are logged as JSON lines.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from rawexport.api.auth import token_rate_key
from rawexport.api.console import actions, charts, delivery, views
from rawexport.api.console.actions import ACTIONS
from rawexport.api.console.forms import read_form
from rawexport.api.console.sessions import (
    ANONYMOUS,
    COOKIE,
    OPERATOR,
    PROJECT,
    SECRET_NAME,
    Session,
    Sessions,
    csrf_ok,
)
from rawexport.api.console.views import Refused, fmt_bytes, fmt_duration, fmt_ms
from rawexport.api.peers import Peers
from rawexport.api.ratelimit import RateLimiter
from rawexport.blobs import BlobStore, links
from rawexport.catalog import Catalog, CatalogError, Project
from rawexport.export.actions import OpsError
from rawexport.settings import Settings
from rawexport.timeutil import (
    DAY_MS,
    HOUR_MS,
    BadDate,
    beijing,
    beijing_day_start,
    beijing_hour_label,
    parse_day_arg,
    parse_hour_arg,
)

log = logging.getLogger("rawexport.console")
HERE = Path(__file__).parent
FLASH = "rawexport_console_flash"
LINK_MINUTES = 5  # download buttons: links signed at the click, short-lived


class Console:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        blobs: BlobStore,
        clock: Callable[[], int],
        limiter: RateLimiter,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.blobs = blobs
        self.clock = clock
        self.base = settings.base_url
        self.root = urlsplit(settings.base_url).path.rstrip("/") + "/console"
        secure = settings.base_url.startswith("https://")
        self.sessions = Sessions(
            catalog.secret(SECRET_NAME),
            settings.admin_token,
            settings.console_session_hours * 3600,
            secure,
        )
        # 5 sign-in attempts at once per client address, then one per 10 s; never queued.
        self.signin_limiter = RateLimiter(0.1, 5, queue=0, max_delay=0)
        self.peers = Peers(settings.trusted_proxies)
        # What signs a link or writes takes the turn of the session's credential under the
        # API's own per-credential limiter: the console gives no extra rate.
        self.limiter = limiter
        self.sleep = sleep
        self.link_secret = catalog.secret(links.SECRET_NAME)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(
            when=fmt_ms,
            duration=fmt_duration,
            size=fmt_bytes,
            hour=beijing_hour_label,
            hh=lambda ms: beijing(ms).strftime("%H"),
            num=lambda n: "" if n is None else f"{n:,}",
        )

    # ---- plumbing --------------------------------------------------------------------

    def _cookie(self, value: str, max_age: int) -> str:
        return self.sessions.cookie_header(value, self.root, max_age)

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> Response:
        flash = unquote(request.cookies.get(FLASH, ""))
        html = self.env.get_template(template).render(
            root=self.root,
            session=session,
            operator=session is not None and session.role == OPERATOR,
            flash=flash if len(flash) < 400 else "",
            **context,
        )
        response = HTMLResponse(html, status)
        if flash:
            response.headers.append("set-cookie", f"{FLASH}=; Path={self.root}; Max-Age=0")
        return response

    def refused(self, request: Request, session: Session | None, e: Refused) -> Response:
        return self.render(request, "error.html", session, e.status, message=str(e))

    def redirect(self, path: str, flash: str = "") -> Response:
        response = RedirectResponse(self.root + path, 303)
        if flash:
            cookie = f"{FLASH}={quote(flash)}; Path={self.root}; Max-Age=60; HttpOnly"
            response.headers.append("set-cookie", cookie + "; SameSite=Strict")
        return response

    def _session(self, request: Request) -> Session | None:
        now = self.clock()
        session = self.sessions.decode(request.cookies.get(COOKIE), now / 1000)
        if session is None or session.role == ANONYMOUS:
            return session
        # Signed in only while the catalog keeps the sign-in: sign-out and revoking the
        # session's token delete it (and a revoked token ends it in any case).
        if not self.catalog.console_session_live(session.sid, now):
            return None
        return session

    def _project(self, session: Session, ai: str) -> Project:
        """The project a signed-in visitor may see; another project is as unknown (404)."""
        project = self.catalog.project(ai)
        if project is None or (session.role == PROJECT and project.id != session.project_id):
            raise Refused(404, f"no project {ai}")
        return project

    async def _turn(self, request: Request, session: Session) -> Response | None:
        """The session's credential takes its turn under the rate limit: it waits as an
        API request would (no thread held), or gets a 429 page; None when it may go on."""
        turn = self.limiter.take(session.rate_key or "s" + session.sid)
        if turn.refused:
            message = f"Too many requests: over the rate limit, retry after {turn.retry_after} s."
            response = self.refused(request, session, Refused(429, message))
            response.headers["retry-after"] = str(turn.retry_after)
            return response
        if turn.delay > 0:
            await self.sleep(turn.delay)
        return None

    async def _guarded(
        self,
        request: Request,
        work: Callable[[Session, dict[str, str]], Response],
        post: bool = False,
        limited: bool = False,
    ) -> Response:
        """Signed-in visitors only; for POST, the form's CSRF token must be the session's.
        `limited`: the work signs a link or writes, so it takes a turn under the rate limit."""
        form: dict[str, str] = {}
        if post:
            read = await read_form(request, 20)
            if read is None:
                return self.refused(request, None, Refused(413, "The form is too large."))
            form = read
        session = await run_in_threadpool(self._session, request)
        if session is None or session.role == ANONYMOUS:
            if post:
                return self.refused(request, None, Refused(403, "Sign in first."))
            return self.redirect("/signin")
        if post and not csrf_ok(session, form.get("csrf")):
            return self.refused(request, session, Refused(403, "Missing or wrong CSRF token."))
        if limited:
            refused = await self._turn(request, session)
            if refused is not None:
                return refused
        try:
            return await run_in_threadpool(work, session, form)
        except Refused as e:
            return self.refused(request, session, e)

    # ---- sign-in ---------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        def work(session: Session, _: dict[str, str]) -> Response:
            if session.role == PROJECT:
                assert session.project_id is not None
                return self.redirect(f"/p/{self.catalog.project_by_id(session.project_id).ai}")
            return self.overview(request, session)

        return await self._guarded(request, work)

    def overview(self, request: Request, session: Session) -> Response:
        now = self.clock()
        summaries = [views.summary(self.catalog, p, now) for p in self.catalog.projects()]
        sparks = {
            s.project.id: charts.bar_chart(
                [p.events for p in s.points], [beijing_hour_label(p.hour_ms) for p in s.points],
                "events",
            )
            for s in summaries
        }  # fmt: skip
        return self.render(
            request, "overview.html", session, summaries=summaries, sparks=sparks, now=now
        )

    async def signin_page(self, request: Request) -> Response:
        session = await run_in_threadpool(self._session, request)
        if session is not None and session.role != ANONYMOUS:
            return self.redirect("/")
        return self._signin_form(request, session, 200, "")

    def _signin_form(
        self, request: Request, session: Session | None, status: int, error: str
    ) -> Response:
        fresh = session is None
        if session is None:
            session = self.sessions.new(ANONYMOUS, self.clock() / 1000)
        response = self.render(
            request,
            "signin.html",
            None,
            status,
            csrf=session.csrf,
            error=error,
            operator_enabled=bool(self.settings.admin_token),
        )
        if fresh:
            cookie = self._cookie(self.sessions.encode(session), 3600)
            response.headers.append("set-cookie", cookie)
        return response

    async def signin(self, request: Request) -> Response:
        form = await read_form(request, 5)
        if form is None:
            return self.refused(request, None, Refused(413, "The form is too large."))
        session = self.sessions.decode(request.cookies.get(COOKIE), self.clock() / 1000)
        if not csrf_ok(session, form.get("csrf")):
            return self.refused(request, None, Refused(403, "Missing or wrong CSRF token."))
        # the client's address, behind trusted proxies too (logged whole, limited per /64)
        address = self.peers.address(request) or (request.client.host if request.client else "?")
        turn = self.signin_limiter.take(self.peers.limit_key(request))
        if turn.refused:
            response = self._signin_form(
                request, session, 429, f"Too many sign-in attempts: wait {turn.retry_after} s."
            )
            response.headers["retry-after"] = str(turn.retry_after)
            return response
        token = form.get("token", "").strip()
        now_s = self.clock() / 1000
        if self.sessions.is_admin_token(token):
            new = self.sessions.new(OPERATOR, now_s)
            who = "operator"
        else:
            found = await run_in_threadpool(self.catalog.token_identity, token) if token else None
            if found is None:
                log.warning(
                    "console sign-in refused",
                    extra={"event": "console_signin", "ok": False, "address": address},
                )
                return self._signin_form(request, session, 401, "That token is not valid.")
            rate_key = token_rate_key(token)
            new = self.sessions.new(PROJECT, now_s, found[1], found[0], rate_key)
            who = f"project {found[1]} token {found[0]}"
        if session is not None and session.sid:  # signed in already: that sign-in ends
            await run_in_threadpool(self.catalog.end_console_session, session.sid)
        await run_in_threadpool(
            self.catalog.open_console_session,
            new.sid,
            new.role,
            new.project_id,
            new.token_id,
            self.clock(),
            new.expires_s * 1000,
        )
        log.info(
            "console sign-in",
            extra={"event": "console_signin", "ok": True, "who": who, "address": address},
        )
        response = self.redirect("/")
        max_age = int(self.sessions.lifetime_s)
        response.headers.append("set-cookie", self._cookie(self.sessions.encode(new), max_age))
        return response

    async def signout(self, request: Request) -> Response:
        def work(session: Session, _: dict[str, str]) -> Response:
            self.catalog.end_console_session(session.sid)  # on every node, copies included
            response = self.redirect("/signin")
            response.headers.append("set-cookie", self._cookie("", 0))
            return response

        return await self._guarded(request, work, post=True)

    # ---- reading ---------------------------------------------------------------------

    def day_arg(self, raw: str | None) -> int:
        if not raw:
            return beijing_day_start(self.clock())
        try:
            return parse_day_arg(raw)
        except BadDate:
            raise Refused(400, f"Not a day: {raw!r} (yyyyMMdd, Beijing time).") from None

    def hour_arg(self, raw: str) -> int:
        try:
            return parse_hour_arg(raw)
        except BadDate:
            raise Refused(400, f"Not an hour: {raw!r} (yyyyMMddHH, Beijing time).") from None

    def _kind(self, project: Project, raw: str) -> str:
        if raw not in views.kinds(project):
            raise Refused(404, f"No data type {raw!r} in this project.")
        return raw

    def _grid_context(self, project: Project, day: int) -> dict[str, Any]:
        now = self.clock()
        grid = views.day_grid(self.catalog, project, day, now)
        jobs = views.jobs_between(self.catalog, project, day, day + DAY_MS)
        points = views.hour_points(project, grid.hours, jobs, now)
        labels = [beijing(h).strftime("%H:00") for h in grid.hours]
        return {
            "project": project,
            "grid": grid,
            "day": beijing(day).strftime("%Y%m%d"),
            "statuses": ("FINISHED", "empty", "RUNNING", "ERROR", "NOT_EXISTS"),
            "events_chart": charts.bar_chart([p.events for p in points], labels, "events"),
            "lag_chart": charts.bar_chart([p.lag_s for p in points], labels, "s lag"),
        }

    async def project_page(self, request: Request) -> Response:
        def work(session: Session, _: dict[str, str]) -> Response:
            project = self._project(session, request.path_params["ai"])
            day = self.day_arg(request.query_params.get("day"))
            context = self._grid_context(project, day)
            creds = self.catalog.credentials(project.id) if session.role == OPERATOR else []
            return self.render(
                request,
                "project.html",
                session,
                **context,
                prev_day=beijing(day - DAY_MS).strftime("%Y%m%d"),
                next_day=beijing(day + DAY_MS).strftime("%Y%m%d"),
                credentials=creds,
                commands=self._commands(project, context["day"], None),
                destinations=delivery.project_destinations(self.catalog, project),
            )

        return await self._guarded(request, work)

    async def destinations_page(self, request: Request) -> Response:
        def work(session: Session, _: dict[str, str]) -> Response:
            project = self._project(session, request.path_params["ai"])
            return delivery.page(self, request, session, project)

        return await self._guarded(request, work)

    async def grid_fragment(self, request: Request) -> Response:
        def work(session: Session, _: dict[str, str]) -> Response:
            project = self._project(session, request.path_params["ai"])
            context = self._grid_context(project, self.day_arg(request.query_params.get("day")))
            return self.render(request, "_grid.html", session, **context)

        return await self._guarded(request, work)

    async def hour_page(self, request: Request) -> Response:
        def work(session: Session, _: dict[str, str]) -> Response:
            p = request.path_params
            project = self._project(session, p["ai"])
            hour, kind = self.hour_arg(p["hour"]), self._kind(project, p["kind"])
            detail = views.hour_detail(self.catalog, project, kind, hour, self.clock())
            template = "_hour.html" if request.query_params.get("part") else "hour.html"
            return self.render(
                request,
                template,
                session,
                project=project,
                kind=kind,
                hour=hour,
                label=beijing_hour_label(hour),
                day=beijing(hour).strftime("%Y%m%d"),
                detail=detail,
                manifests={
                    r.job.id: self._manifest(r.job.manifest_key)
                    for _, revs in detail.revisions
                    for r in revs
                    if r.current and r.job.manifest_key
                },
                commands=self._commands(project, beijing(hour).strftime("%Y%m%d"), (kind, hour)),
                closed=hour + HOUR_MS <= self.clock(),
                deliveries=delivery.hour_deliveries(self.catalog, project, kind, hour),
            )

        return await self._guarded(request, work)

    def _manifest(self, key: str) -> str:
        """The manifest's JSON, pretty, when the blob store is a local directory."""
        if not self.blobs.local:
            return ""
        try:
            data = json.loads(self.blobs.local_path(key).read_bytes())
        except (OSError, ValueError):
            return ""
        return json.dumps(data, indent=2, ensure_ascii=False)

    def _commands(self, project: Project, day: str, hour: tuple[str, int] | None) -> list[str]:
        """Copyable commands for the day (and the hour); `$TOKEN` stands for the token."""
        b, ai = self.base, project.ai
        out = [
            f"curl -s -H \"Authorization: $TOKEN\" '{b}/v2/insights/day/{ai}/{day}.json?expire=60'",
            f'rawexport pull --base-url {b} --ai {ai} --token "$TOKEN" --type day '
            f"--date {day} --to gio-data",
        ]
        if hour is not None:
            kind, h = hour
            label = beijing_hour_label(h)
            url = (
                f"{b}/insights/{ai}/{label}.json?expire=60"
                if kind == views.V1
                else f"{b}/v2/insights/hour/{kind}/{ai}/{label}.json?expire=60"
            )
            kind_flag = "--version v1" if kind == views.V1 else f"--data-type {kind}"
            out = [
                f"curl -s -H \"Authorization: $TOKEN\" '{url}'",
                f'rawexport pull --base-url {b} --ai {ai} --token "$TOKEN" --type hour '
                f"--date {label} {kind_flag} --to gio-data",
                *out,
            ]
        return out

    async def file(self, request: Request) -> Response:
        """A download button: a link signed now, for LINK_MINUTES, to a file of the hour."""

        def work(session: Session, _: dict[str, str]) -> Response:
            p = request.path_params
            project = self._project(session, p["ai"])
            hour, kind = self.hour_arg(p["hour"]), self._kind(project, p["kind"])
            key = request.query_params.get("key", "")
            if not views.owned_key(self.catalog, project, kind, hour, key):
                raise Refused(404, "No such file in this hour.")
            now = self.clock()
            expires = links.expiry(now, LINK_MINUTES, hour, project.retention_days)
            if expires <= now:
                raise Refused(410, "This hour is past its retention.")
            path = key if key.endswith(".json") else links.link_path(key, self.base)
            url = links.make_link(self.base, self.link_secret, path, expires)
            # Recorded like the API's links, so the sweeper keeps the file while it lives.
            payload = {"links": [url], "keys": ["/" + key]}
            self.catalog.save_issued(project.id, "console", key, payload, expires, now)
            return RedirectResponse(url, 303)

        return await self._guarded(request, work, limited=True)

    # ---- operator actions ------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        def work(session: Session, form: dict[str, str]) -> Response:
            name = request.path_params["action"]
            if name not in ACTIONS:
                raise Refused(404, f"No action {name!r}.")
            if session.role != OPERATOR:
                raise Refused(403, "Only an operator may do this.")
            project = self._project(session, request.path_params["ai"])
            try:
                return actions.act(self, request, session, name, project, form)
            except (OpsError, CatalogError) as e:
                raise Refused(400, str(e)) from None

        return await self._guarded(request, work, post=True, limited=True)
