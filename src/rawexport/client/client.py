"""ExportClient: GrowingIO's auth flow, rate limits and export polling (rawexport or GrowingIO)."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from rawexport.signatures import sign_auth

GROWINGIO_URL = "https://www.growingio.com"
USER_AGENT = "rawexport-pull/0.1"
MAX_RATE_LIMITED = 100  # 429 answers in a row before giving up


# rawexport answers with exactly GrowingIO's fields unless asked for its own: the manifest
# links (checksums of every part) and v1's errorMsg. GrowingIO ignores the parameter.
EXTRAS = {"manifest": "true"}


class ClientError(Exception):
    """A failure of a pull; `exit_code` is what `rawexport pull` exits with."""

    exit_code = 1


class AuthError(ClientError):
    exit_code = 3


class NotExists(ClientError):
    exit_code = 4


class ExportFailed(ClientError):
    exit_code = 5


class DownloadError(ClientError):
    exit_code = 6


class WaitTimeout(ClientError):
    exit_code = 7


@dataclass(frozen=True)
class Export:
    """One FINISHED (or other) answer of the v2 API, links keyed by data type."""

    status: str
    links: dict[str, list[str]]
    manifests: dict[str, list[str]]
    error: str
    body: dict[str, Any] = field(repr=False)


_FOLDER = re.compile(r"[0-9a-f]+_[0-9a-zA-Z]+_([a-z0-9_]+?)_(?:\d{8}|\d{12})")


def folder_type(url: str) -> str:
    """The data type named by a link's folder, `{hex}_{ai}_{type}_{date}` (v1 links)."""
    folder = unquote(urlsplit(url).path).rsplit("/", 2)[-2] if "/" in url else ""
    m = _FOLDER.fullmatch(folder)
    return m[1] if m else "unknown"


def _retry_after(response: httpx.Response, default: float) -> float:
    raw = response.headers.get("retry-after", "")
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return default


class ExportClient:
    """Talks to `base_url` the way GrowingIO documents: HMAC auth code or a static token.

    `ExportClient(base_url, ai, project_uid, public_key, private_key)` uses the HMAC flow;
    `ExportClient(base_url, ai, token)` (or `token=`) a static API token.

    It paces API calls to `rate` per second, sleeps out 429 `Retry-After`, renews the auth
    code once on a 401, and retries connection errors and 5xx with capped backoff. `sleep`
    and `clock` are injected so tests never wait.
    """

    def __init__(
        self,
        base_url: str,
        ai: str,
        project_uid: str | None = None,
        public_key: str | None = None,
        private_key: str | None = None,
        *,
        token: str | None = None,
        rate: float = 2.0,
        retries: int = 6,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        if token is None and project_uid and public_key is None and private_key is None:
            token, project_uid = project_uid, None  # the (base_url, ai, token) form
        if token is None and not (project_uid and public_key and private_key):
            raise AuthError("give a token, or project_uid, public_key and private_key")
        self.base_url = base_url.rstrip("/")
        self.ai = ai
        self.project_uid, self.public_key, self.private_key = project_uid, public_key, private_key
        self.token = token
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.retries = retries
        self.http = http or httpx.Client(
            timeout=httpx.Timeout(60.0, connect=10.0), headers={"user-agent": USER_AGENT}
        )
        self.sleep, self.clock, self.wall_ms = sleep, clock, wall_ms
        self._code: str | None = None
        self._lock = threading.Lock()
        self._next_call = 0.0

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ExportClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- auth ------------------------------------------------------------------------

    def auth_code(self, renew: bool = False) -> str:
        """The current auth code, fetched from POST /auth/token when missing or renewed."""
        if self._code is not None and not renew:
            return self._code
        assert self.project_uid and self.public_key and self.private_key
        tm = str(self.wall_ms())
        params = {
            "project": self.project_uid,
            "ai": self.ai,
            "tm": tm,
            "auth": sign_auth(self.private_key, self.project_uid, self.ai, tm),
        }
        body = "&".join(f"{k}={v}" for k, v in params.items())
        r = self._send(
            "POST",
            "/auth/token",
            headers={"x-client-id": self.public_key, "content-type": "text/plain"},
            content=body.encode(),
        )
        try:
            answer = r.json()
        except ValueError:
            answer = None
        if (
            r.status_code != 200
            or not isinstance(answer, dict)
            or answer.get("status") != "success"
        ):
            raise AuthError(f"POST /auth/token refused the signature (HTTP {r.status_code})")
        self._code = str(answer["code"])
        return self._code

    def _auth_headers(self, renew: bool = False) -> dict[str, str]:
        if self.token is not None:
            headers = {"authorization": self.token}
            if self.public_key:
                headers["x-client-id"] = self.public_key
            return headers
        return {"x-client-id": str(self.public_key), "authorization": self.auth_code(renew)}

    # ---- transport -------------------------------------------------------------------

    def _pace(self) -> None:
        """Wait until the next API call keeps under `rate` requests per second."""
        with self._lock:
            now = self.clock()
            wait = self._next_call - now
            self._next_call = max(now, self._next_call) + self.interval
        if wait > 0:
            self.sleep(wait)

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One API call with pacing; 429s, connection errors and 5xx are retried (bounded)."""
        delay, failures, limited = 0.5, 0, 0
        while True:
            self._pace()
            try:
                r = self.http.request(method, self.base_url + path, **kw)
            except httpx.TransportError as e:
                failures += 1
                if failures > self.retries:
                    raise ClientError(f"{method} {self.base_url}{path}: {e}") from None
                self.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if r.status_code == 429:
                limited += 1
                if limited > MAX_RATE_LIMITED:
                    raise ClientError(f"{method} {path}: still rate limited (HTTP 429)")
                self.sleep(_retry_after(r, 1.0))
                continue
            if r.status_code >= 500 and failures < self.retries:
                failures += 1
                self.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            return r

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """GET an API path with credentials; one 401 renews the auth code and retries."""
        r = self._send("GET", path, headers=self._auth_headers(), params=params)
        if r.status_code == 401 and self.token is None:
            r = self._send("GET", path, headers=self._auth_headers(renew=True), params=params)
        if r.status_code in (401, 403):
            raise AuthError(f"GET {path}: HTTP {r.status_code}, the credential was refused")
        try:
            return r.status_code, r.json()
        except ValueError:
            raise ClientError(f"GET {path}: HTTP {r.status_code}, not JSON") from None

    # ---- exports ---------------------------------------------------------------------

    def export(
        self,
        export_type: str,
        data_type: str | None,
        export_date: str,
        expire: int = 60,
        version: str = "v2",
    ) -> Export:
        """One v2 call: E2 for a data type, E3 (all types) when data_type is None.

        version="v1": the v1 call for the day (yyyyMMdd) or hour (yyyyMMddHH), all 7 v1
        types at once; its flat `downlinks` are grouped by the type in each link's folder.
        """
        if version == "v1":
            return self._export_v1(export_date, expire)
        middle = f"{data_type}/" if data_type else ""
        path = f"/v2/insights/{export_type}/{middle}{self.ai}/{export_date}.json"
        status, body = self.get_json(path, {"expire": str(expire), **EXTRAS})
        if not isinstance(body, dict) or "status" not in body:
            raise ClientError(f"GET {path}: HTTP {status}, not an export envelope")
        if status == 400:
            raise ExportFailed(f"bad request: {body.get('errorMsg', '')}")

        def by_type(raw: Any) -> dict[str, list[str]]:
            if isinstance(raw, dict):
                return {str(t): [str(u) for u in v] for t, v in raw.items()}
            return {str(data_type): [str(u) for u in raw or []]}

        return Export(
            str(body["status"]),
            by_type(body.get("downloadLinks")),
            by_type(body.get("manifest")),
            str(body.get("errorMsg") or ""),
            body,
        )

    def _export_v1(self, export_date: str, expire: int) -> Export:
        path = f"/insights/{self.ai}/{export_date}.json"
        status, body = self.get_json(path, {"expire": str(expire), **EXTRAS})
        if not isinstance(body, dict) or "status" not in body:
            raise ClientError(f"GET {path}: HTTP {status}, not an export envelope")
        if status == 400:
            raise ExportFailed(f"bad request: {body.get('errorMsg', '')}")

        def by_type(raw: Any) -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for url in raw or []:
                out.setdefault(folder_type(str(url)), []).append(str(url))
            return out

        return Export(
            str(body["status"]),
            by_type(body.get("downlinks")),
            by_type(body.get("manifest")),
            str(body.get("errorMsg") or ""),
            body,
        )

    def wait(
        self,
        export_type: str,
        data_type: str | None,
        export_date: str,
        *,
        expire: int = 60,
        timeout: float = 0.0,
        max_poll: float = 60.0,
        version: str = "v2",
    ) -> Export:
        """Poll until FINISHED: RUNNING is retried with capped backoff for `timeout` s.

        NOT_EXISTS, ERROR and an exhausted timeout raise with a one-line reason.
        """
        what = f"{export_type} {data_type or 'all types'} {export_date}"
        deadline = self.clock() + timeout
        delay = 2.0
        while True:
            answer = self.export(export_type, data_type, export_date, expire, version)
            if answer.status == "FINISHED":
                return answer
            if answer.status == "NOT_EXISTS":
                reason = answer.error or (
                    "export disabled, before export was enabled, past retention, or in the future"
                )
                raise NotExists(f"{what}: NOT_EXISTS ({reason})")
            if answer.status == "ERROR":
                raise ExportFailed(f"{what}: ERROR: {answer.error or 'export failed'}")
            if answer.status != "RUNNING":
                raise ClientError(f"{what}: unknown status {answer.status!r}")
            left = deadline - self.clock()
            if left <= 0:
                raise WaitTimeout(f"{what}: still RUNNING after {timeout:g} s")
            # Jitter keeps many pullers polling one server from moving in lockstep.
            self.sleep(min(delay * (0.9 + 0.2 * random.random()), left))
            delay = min(delay * 2, max_poll)
