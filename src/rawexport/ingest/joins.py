"""Join ids of the v2 types, the pages and login users events are linked to, and re-sends.

The ids are deterministic functions of the events (spec/GROWINGIO_COLLECT_SPEC.md §4.3),
so any node computes the same ones for the rows of a session, whatever hour they fall in:

* vstRequestId: `sha1(ai|visitUserId|sessionId)`, first 16 hex digits;
* pageRequestId: the page time (ms) then `sha1(ai|visitUserId|sessionId|path|pageTime)`,
  first 10 hex digits (23 characters for a 13-digit time, GrowingIO's shape);
* actionRequestId: `wa:` (web, hybrid, mini-programs) or `ma:` (native apps), then
  `sha1(ai|visitUserId|sessionId|type|time|xpath|index|element)`, first 24 hex digits.

What needs state: events of SDKs that send no page time (web 4.x, iOS CDP) are linked to
the latest page of their visitor, session and path shown at or before them (`Pages`);
server events with no visitor (SaaS s2s, login-only CDP events) to the visitor last seen
as their login user in the previous 4 hours (`Logins`); re-sent events are told by their
content (`Resent`). That state is the node's own, in memory, bounded in entries; pages and
login users also go to the catalog (`Shared`), where another node, or this one after a
restart, finds them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from rawexport.catalog.links import Link, LinkStore
from rawexport.periodic import Periodic

log = logging.getLogger("rawexport.collect")

PENDING_LINKS = 1_000_000  # links a node keeps for the catalog while it cannot write them
LOGIN_LINK_MS = 4 * 3600 * 1000  # GrowingIO links a server event to a login seen this recently


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def visit_id(ai: str, visitor: str | None, session: str | None) -> str | None:
    if not visitor or not session:
        return None
    return _sha1(f"{ai}|{visitor}|{session}")[:16]


def page_id(
    ai: str, visitor: str | None, session: str | None, path: str | None, page_time: int | None
) -> str | None:
    if page_time is None or not visitor:
        return None
    digest = _sha1(f"{ai}|{visitor}|{session or ''}|{path or ''}|{page_time}")
    return f"{page_time}{digest[:10]}"


def action_id(
    native: bool,
    ai: str,
    visitor: str | None,
    session: str | None,
    kind: str,
    at: int | None,
    xpath: str | None,
    index: Any,
    element: int,
) -> str:
    key = f"{ai}|{visitor or ''}|{session or ''}|{kind}|{at}|{xpath or ''}|{index}|{element}"
    return ("ma:" if native else "wa:") + _sha1(key)[:24]


class _Bounded:
    """An insertion-ordered map that forgets its oldest entries past `size`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()

    def _put(self, key: Any, value: Any) -> None:
        items = self.items
        items[key] = value
        items.move_to_end(key)
        while len(items) > self.size:
            items.popitem(last=False)


def link_key(*parts: str) -> str:
    """32 hex digits naming what a link is by (visitor, session, path; or a login user)."""
    text = "\0".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).hexdigest()


class Pages(_Bounded):
    """Page show times per (ai, visitor, session, path): the last few of each, and those
    other nodes saw (`shared`, the catalog) when this one has none."""

    PER_PATH = 8

    def __init__(self, size: int = 200_000, shared: Shared | None = None) -> None:
        super().__init__(size)
        self.shared = shared

    def add(self, ai: str, visitor: str, session: str, path: str, at: int) -> None:
        key = (ai, visitor, session, path)
        with self.lock:
            times: list[int] = self.items.get(key) or []
            new = at not in times
            if new:
                times = sorted([*times, at])[-self.PER_PATH :]
            self._put(key, times)
        if new and self.shared is not None:
            self.shared.queue(Link(ai, "page", link_key(visitor, session, path), at))

    def shown(self, ai: str, visitor: str, session: str, path: str, at: int | None) -> int | None:
        """The time of the latest page of that path shown at or before `at`."""
        with self.lock:
            times = self.items.get((ai, visitor, session, path))
        if times is None:  # this node never saw that page: perhaps another one did
            if self.shared is None:
                return None
            link = self.shared.latest(ai, "page", link_key(visitor, session, path), at)
            return link.at if link is not None else None
        best = None
        for t in times:
            if at is None or t <= at:
                best = t
        return best


class Logins(_Bounded):
    """The visitor and session last seen as a login user, per (ai, login user id)."""

    def __init__(self, size: int = 200_000, shared: Shared | None = None) -> None:
        super().__init__(size)
        self.shared = shared

    def add(self, ai: str, user: str, visitor: str, session: str | None, at: int) -> None:
        key = (ai, user)
        with self.lock:
            seen = self.items.get(key)
            new = seen is None or seen[:2] != (visitor, session)
            if seen is None or seen[2] <= at:
                self._put(key, (visitor, session, at))
        if new and self.shared is not None:
            self.shared.queue(Link(ai, "login", link_key(user), at, visitor, session))

    def visitor(self, ai: str, user: str, at: int | None) -> tuple[str, str | None] | None:
        with self.lock:
            seen = self.items.get((ai, user))
        if seen is None and self.shared is not None:
            upper = None if at is None else at + LOGIN_LINK_MS
            link = self.shared.latest(ai, "login", link_key(user), upper)
            if link is not None and link.visitor:
                seen = (link.visitor, link.session, link.at)
        if seen is None:
            return None
        if at is not None and not (at - LOGIN_LINK_MS <= seen[2] <= at + LOGIN_LINK_MS):
            return None
        return seen[0], seen[1]


class Shared:
    """The links every node sees: new ones written to the catalog by a thread every
    `flush_seconds` (one transaction for all), looked up there when a node has none;
    links older than `keep_ms` are deleted as they go. A write that fails keeps its links
    for the next pass (the loop backs off, and `on_error` counts the failure)."""

    def __init__(
        self,
        store: LinkStore,
        flush_seconds: float = 0.1,
        keep_ms: int = 48 * 3600 * 1000,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.on_error = on_error
        self.flush_seconds = flush_seconds
        self.keep_ms = keep_ms
        self._pending: list[Link] = []
        self._lock = threading.Lock()
        self._loop: Periodic | None = None
        self._swept = 0.0
        self._misses: dict[tuple[str, str, str], float] = {}
        self.miss_seconds = 1.0

    def queue(self, link: Link) -> None:
        with self._lock:
            if len(self._pending) < PENDING_LINKS:  # an unreachable catalog bounds the backlog
                self._pending.append(link)
            if self._loop is None:
                self._loop = Periodic(
                    "sdk-links",
                    self.flush,
                    self.flush_seconds,
                    first_wait=True,
                    on_error=self.on_error,
                )
                self._loop.start()

    def latest(self, ai: str, kind: str, key: str, at_most: int | None) -> Link | None:
        """The latest link of that key at or before `at_most` that any node wrote; a key
        the catalog did not have is not asked again for `miss_seconds` (a server's events
        with a path and no page would otherwise cost a query each)."""
        now = time.monotonic()
        with self._lock:
            missed = self._misses.get((ai, kind, key))
            if missed is not None and now - missed < self.miss_seconds:
                return None
        try:
            link = self.store.latest_link(ai, kind, key, at_most)
        except Exception:
            log.exception("could not read links from the catalog")
            return None
        if link is None:
            with self._lock:
                if len(self._misses) >= 100_000:
                    self._misses.clear()
                self._misses[(ai, kind, key)] = now
        return link

    def flush(self) -> None:
        with self._lock:
            links, self._pending = self._pending, []
        if not links:
            return
        now = int(time.time() * 1000)
        try:
            self.store.add_links(links, now)
        except Exception:
            with self._lock:  # kept for the next pass, within the backlog's bound
                self._pending = (links + self._pending)[:PENDING_LINKS]
            raise
        if time.monotonic() - self._swept > 600:
            self._swept = time.monotonic()
            self.store.delete_links_before(now - self.keep_ms)


class Resent(_Bounded):
    """Fingerprints of the events of the last `window` seconds: a re-sent event (web XHR
    then image, mobile and server SDKs after a timeout) has the same content."""

    def __init__(self, size: int = 500_000, window: float = 600.0) -> None:
        super().__init__(size)
        self.window = window

    @staticmethod
    def fingerprint(ai: str, event: dict[str, Any]) -> int:
        """The event's content as sent (a re-send repeats the same body, keys in the same
        order), and its project: Python's 64-bit SipHash of both, keyed per process (two
        events that differ collide once in 2**64: far below any SDK's own loss)."""
        return hash((ai, orjson.dumps(event)))

    def seen(self, print_: int) -> bool:
        """True when this fingerprint was seen within the window; remembers it otherwise."""
        return not self.new([print_])[0]

    def new(self, prints: list[int]) -> list[bool]:
        """For each fingerprint, whether it is new (not seen within the window, nor earlier
        in the list); the new ones are remembered. One lock for the whole list."""
        now = time.monotonic()
        out = []
        items = self.items
        with self.lock:
            for p in prints:
                at = items.get(p)
                if at is not None and now - at < self.window:
                    out.append(False)
                    continue
                if at is not None:
                    del items[p]
                items[p] = now
                out.append(True)
            while len(items) > self.size:
                items.popitem(last=False)
        return out

    def forget(self, prints: list[int]) -> None:
        """Forget fingerprints of events that were not stored after all (a failed write:
        the SDK's re-send must then be taken)."""
        with self.lock:
            for p in prints:
                self.items.pop(p, None)


class Sessions:
    """The node's linking state, shared by every collector route; with a catalog, the
    pages and login users are shared with the other nodes."""

    def __init__(
        self,
        size: int = 100_000,
        store: LinkStore | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.shared = Shared(store, on_error=on_error) if store is not None else None
        self.pages = Pages(size, self.shared)
        self.logins = Logins(size, self.shared)
        self.resent = Resent(size * 2)
