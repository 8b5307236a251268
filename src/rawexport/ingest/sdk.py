"""GrowingIO SDK events filed under the v2 data types, column by column.

Two families (spec/GROWINGIO_COLLECT_SPEC.md §3, §4): CDP events (`eventType`, long
names; JSON or protobuf, every CDP SDK) and SaaS short-key events (`t`, `u`, `s`, `tm`…;
the SaaS mobile, web, mini-program and server SDKs). Each event becomes rows of its v2
type (§4.1): VISIT/vst -> visit, PAGE/page -> page (and pvar when a CDP page carries
attributes), clicks, changes and submits -> action (one row per element),
CUSTOM/cstm -> custom_event, page / conversion / visitor variables -> pvar / evar / vstr,
activations -> ads_track_activation. Impressions, app-closed, re-engagements, items and
user mappings are accepted and not exported. Login-user attributes (no v2 type has them)
are filed under vstr with the login user id in the map (`$loginUserId`), or dropped and
counted when `login_user_attributes = "drop"`.

A bad event is rejected alone (its index, field and reason); the others are kept. Text
longer than its column is cut to the column's length (GrowingIO's columns are sized), but
for `ip`, which keeps an IPv6 address whole. Map values of any JSON type are kept as text:
numbers in their JSON spelling, booleans `true`/`false`, lists joined by `||` (the SDKs'
own rule), objects as compact JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from rawexport.ingest import joins
from rawexport.ingest.sdkrows import (
    ACTION_TYPES,
    ACTIVATIONS,
    CDP_TYPES,
    CDP_VISIT,
    LOGIN_KEY,
    NATIVE_PLATFORMS,
    NOT_EXPORTED_CDP,
    NOT_EXPORTED_SAAS,
    SAAS_ACTIONS,
    SAAS_TYPES,
    SAAS_VISIT,
    WEB_PLATFORMS,
    Event,
    Origin,
    Rows,
    action,
    activation,
    cdp_common,
    custom_event,
    evar,
    need_visitor,
    saas_common,
    visit,
    vstr,
)
from rawexport.ingest.sdkvalues import (
    Invalid,
    integer,
    map_text,
    number,
    platform_name,
    string,
)
from rawexport.ingest.validate import Batch, Rejection

__all__ = ["Filed", "Mapper", "Origin"]


@dataclass
class Filed:
    """The rows of a request's events per data type, and what was not exported."""

    batch: Batch
    events: int = 0  # events in the request
    unexported: int = 0  # accepted, no v2 type (impressions, app closed, items, ...)
    duplicates: int = 0  # re-sends of events already taken
    prints: list[int] = field(default_factory=list)  # fingerprints of the new events


class Mapper:
    """Files the events of one request; `sessions` is the node's linking state."""

    def __init__(self, sessions: joins.Sessions, login_user_attributes: str = "vstr") -> None:
        self.sessions = sessions
        self.keep_login_attributes = login_user_attributes == "vstr"
        self.dropped_login_attributes = 0

    # ---- shared ---------------------------------------------------------------------------

    def _fresh(self, ai: str, events: list[Any], filed: Filed) -> list[tuple[int, dict[str, Any]]]:
        """(index, event) of the events not seen before; the others are counted."""
        resent = self.sessions.resent
        fingerprint = resent.fingerprint
        candidates: list[tuple[int, dict[str, Any]]] = []
        prints: list[int] = []
        for i, event in enumerate(events):
            if type(event) is not dict:
                filed.batch.rejected.append(Rejection(i, "", "an event must be a JSON object"))
                continue
            try:
                prints.append(fingerprint(ai, event))
            except (TypeError, orjson.JSONEncodeError):
                filed.batch.rejected.append(Rejection(i, "", "not valid JSON text"))
                continue
            candidates.append((i, event))
        out = []
        for candidate, print_, new in zip(candidates, prints, resent.new(prints), strict=True):
            if new:
                out.append(candidate)
                filed.prints.append(print_)
            else:
                filed.duplicates += 1
        return out

    def _page_time(self, ai: str, ev: Event, sent: Any, name: str) -> int | None:
        """The time of the page an event belongs to: sent by the SDK, else the latest page of
        its path shown before it."""
        page_time = integer(name, sent)
        if page_time is None and ev.visitor and ev.path is not None:
            page_time = self.sessions.pages.shown(ai, ev.visitor, ev.session or "", ev.path, ev.at)
        return page_time

    def _link_login(self, ai: str, ev: Event) -> None:
        """An event with no visitor but a login user: the visitor last seen as that user."""
        if ev.visitor or not ev.user:
            return
        seen = self.sessions.logins.visitor(ai, ev.user, ev.at)
        if seen is not None:
            ev.visitor, linked_session = seen
            ev.session = ev.session or linked_session

    def _remember(self, ai: str, ev: Event, page: bool) -> None:
        """A page's show time, and the visitor who viewed it as its login user (GrowingIO
        links a server event to a visitor who viewed pages as that user)."""
        if not page or not ev.visitor or ev.at is None:
            return
        if ev.path is not None:
            self.sessions.pages.add(ai, ev.visitor, ev.session or "", ev.path, ev.at)
        if ev.user:
            self.sessions.logins.add(ai, ev.user, ev.visitor, ev.session, ev.at)

    def _file(
        self,
        events: list[Any],
        origin: Origin,
        common: Callable[[dict[str, Any]], Event],
        is_page: Callable[[dict[str, Any]], bool],
        one: Callable[[Rows, Origin, dict[str, Any], Event], int],
        type_field: str,
    ) -> Filed:
        filed = Filed(Batch(), events=len(events))
        rows = Rows(origin.received)
        fresh = self._fresh(origin.ai, events, filed)
        parsed: list[tuple[int, dict[str, Any], Event]] = []
        for i, event in fresh:  # pages and logins first: events of the batch link to them
            try:
                ev = common(event)
            except Invalid as e:
                filed.batch.rejected.append(Rejection(i, e.field, e.reason))
                continue
            self._remember(origin.ai, ev, is_page(event))
            parsed.append((i, event, ev))
        for i, event, ev in parsed:
            try:
                self._link_login(origin.ai, ev)
                filed.unexported += one(rows, origin, event, ev)
            except Invalid as e:
                filed.batch.rejected.append(Rejection(i, e.field, e.reason))
            except KeyError:
                kind = event.get(type_field)
                filed.batch.rejected.append(
                    Rejection(i, type_field, f"unsupported event type {kind!r}")
                )
        filed.batch.tables = rows.chunks()
        return filed

    def _login_attributes(
        self, rows: Rows, ev: Event, attributes: Any, user_key: Any, name: str
    ) -> int:
        """Login-user attributes: a vstr row keyed by the visitor (else the login user),
        the login id kept in the map; or dropped, and counted, when so configured."""
        if not self.keep_login_attributes:
            self.dropped_login_attributes += 1
            return 1
        extra = {}
        if ev.user:
            extra[LOGIN_KEY] = ev.user
            if user_key:
                extra["$userKey"] = str(user_key)
        visitor = ev.visitor or ev.user
        if not visitor:
            raise Invalid("userId", "required")
        rows.add(
            "vstr",
            {
                "visitUserId": visitor,
                "sessionId": ev.session,
                "time": ev.at,
                "visitorVariable": map_text(name, attributes, extra),
            },
        )
        return 0

    # ---- CDP ------------------------------------------------------------------------------

    def cdp(self, events: list[Any], origin: Origin) -> Filed:
        """CDP events (JSON bodies, or protobuf decoded to the same names)."""
        return self._file(
            events,
            origin,
            cdp_common,
            lambda e: e.get("eventType") == "PAGE",
            self._cdp_one,
            "eventType",
        )

    def _cdp_one(self, rows: Rows, origin: Origin, e: dict[str, Any], ev: Event) -> int:
        kind = e.get("eventType")
        if type(kind) is not str:
            raise Invalid("eventType", "required" if kind is None else "expected a string")
        if kind not in CDP_TYPES:
            raise KeyError(kind)
        ai = origin.ai
        platform = string(e.get("platform"))
        low = (platform or "").lower()
        web = low in WEB_PLATFORMS
        native = low in NATIVE_PLATFORMS
        attributes = e.get("attributes")
        if kind in NOT_EXPORTED_CDP:
            return 1
        if kind == "LOGIN_USER_ATTRIBUTES":
            return self._login_attributes(rows, ev, attributes, e.get("userKey"), "attributes")
        if kind == "CUSTOM":
            name = string(e.get("eventName"))
            if not name:
                raise Invalid("eventName", "required")
            page_time = self._page_time(ai, ev, e.get("pageShowTimestamp"), "pageShowTimestamp")
            page_id = joins.page_id(ai, ev.visitor, ev.session, ev.path, page_time)
            variables = map_text("attributes", attributes)
            rows.add("custom_event", custom_event(ev, name, page_time, page_id, variables))
            return 0
        if kind == "ACTIVATE":
            if string(e.get("eventName")) not in ACTIVATIONS:
                return 1  # re-engagements: no v2 type
            attrs = attributes if type(attributes) is dict else {}
            rows.add("ads_track_activation", activation(e, ev, attrs, origin, platform))
            return 0
        need_visitor(ev, "deviceId")
        if kind == "VISIT":
            rows.add("visit", visit(e, CDP_VISIT, ev, origin, platform, web, native))
            return 0
        if kind == "PAGE":
            page_id = joins.page_id(ai, ev.visitor, ev.session, ev.path, ev.at)
            rows.add(
                "page",
                {
                    "visitUserId": ev.visitor,
                    "sessionId": ev.session,
                    "platform": platform_name(platform),
                    "domain": ev.domain,
                    "page": ev.path,
                    "queryParameters": ev.query,
                    # a web page's referrer is a URL; a native or mini-program page's the
                    # name of the page before it
                    "referrer": string(e.get("referralPage")) if web else None,
                    "referrerPage": None if web else string(e.get("referralPage")),
                    "title": string(e.get("title")),
                    "time": ev.at,
                    "deviceOrientation": string(e.get("orientation")),
                    "loginUserId": ev.user,
                    "pageRequestId": page_id,
                    "vstRequestId": joins.visit_id(ai, ev.visitor, ev.session),
                },
            )
            variables = map_text("attributes", attributes)
            if variables is not None:
                self._pvar(rows, ev, ev.at, variables, page_id)
            return 0
        if kind in ACTION_TYPES:
            page_time = self._page_time(ai, ev, e.get("pageShowTimestamp"), "pageShowTimestamp")
            request_type = ACTION_TYPES[kind]
            index = integer("index", e.get("index"))
            page_id = joins.page_id(ai, ev.visitor, ev.session, ev.path, page_time)
            xpath = string(e.get("xpath"))
            row = action(ev, ai, native, request_type, ev.at, index, xpath, 0, page_id)
            row["href"] = string(e.get("hyperlink"))
            row["requestValue"] = string(e.get("textValue"))
            rows.add("action", row)
            return 0
        if kind == "PAGE_ATTRIBUTES":
            page_time = self._page_time(ai, ev, e.get("pageShowTimestamp"), "pageShowTimestamp")
            page_id = joins.page_id(ai, ev.visitor, ev.session, ev.path, page_time)
            self._pvar(rows, ev, page_time, map_text("attributes", attributes), page_id)
            return 0
        if kind == "CONVERSION_VARIABLES":
            rows.add("evar", evar(ev, map_text("attributes", attributes)))
            return 0
        if kind == "VISITOR_ATTRIBUTES":
            rows.add("vstr", vstr(ev, map_text("attributes", attributes)))
            return 0
        raise KeyError(kind)

    @staticmethod
    def _pvar(
        rows: Rows, ev: Event, page_time: int | None, variables: str | None, page_id: str | None
    ) -> None:
        rows.add(
            "pvar",
            {
                "visitUserId": ev.visitor,
                "sessionId": ev.session,
                "time": ev.at,
                "pageTime": page_time,
                "domain": ev.domain,
                "page": ev.path,
                "pageVariable": variables,
                "pageRequestId": page_id,
            },
        )

    # ---- SaaS -----------------------------------------------------------------------------

    def saas(self, events: list[Any], origin: Origin) -> Filed:
        """SaaS short-key events (`t`: vst, page, clck, cstm, ...)."""
        checked: list[Any] = []
        wrong: list[Rejection] = []
        for i, event in enumerate(events):
            if type(event) is dict and event.get("ai") not in (None, "", origin.ai):
                wrong.append(Rejection(i, "ai", "event of another project"))
                checked.append(None)
            else:
                checked.append(event)
        kept = [e for e in checked if e is not None]
        index = [i for i, e in enumerate(checked) if e is not None]
        filed = self._file(
            kept, origin, saas_common, lambda e: e.get("t") == "page", self._saas_one, "t"
        )
        filed.events = len(events)
        back = [Rejection(index[r.index], r.field, r.reason) for r in filed.batch.rejected]
        filed.batch.rejected = sorted(wrong + back, key=lambda r: r.index)
        return filed

    def _saas_one(self, rows: Rows, origin: Origin, e: dict[str, Any], ev: Event) -> int:
        kind = e.get("t")
        if type(kind) is not str:
            raise Invalid("t", "required" if kind is None else "expected a string")
        if kind not in SAAS_TYPES:
            raise KeyError(kind)
        ai = origin.ai
        route = origin.route_platform
        native = route in ("android", "ios")
        platform = {"android": "Android", "ios": "iOS", "web": "Web"}.get(route or "")
        platform = platform or platform_name(e.get("b"))
        web = (platform or "").lower() in WEB_PLATFORMS
        variables = e.get("var")
        if kind in NOT_EXPORTED_SAAS:
            return 1
        if kind == "ppl":
            return self._login_attributes(rows, ev, variables, None, "var")
        if kind == "cstm":
            name = string(e.get("n"))
            if not name:
                raise Invalid("n", "required")
            page_time = self._page_time(ai, ev, e.get("ptm"), "ptm")
            if variables is None and type(e.get("e")) is dict:
                variables = e["e"]  # the py2 SDK's name for it
            page_id = string(e.get("prid")) or joins.page_id(
                ai, ev.visitor, ev.session, ev.path, page_time
            )
            row = custom_event(ev, name, page_time, page_id, map_text("var", variables))
            row["eventNumber"] = number("num", e.get("num"))
            rows.add("custom_event", row)
            return 0
        if kind == "activate":
            rows.add("ads_track_activation", activation(e, ev, {}, origin, platform))
            return 0
        need_visitor(ev, "u")
        if kind == "vst":
            rows.add("visit", visit(e, SAAS_VISIT, ev, origin, platform, web, native))
            return 0
        if kind == "page":
            rows.add(
                "page",
                {
                    "visitUserId": ev.visitor,
                    "sessionId": ev.session,
                    "platform": platform,
                    "domain": ev.domain,
                    "page": ev.path,
                    "queryParameters": ev.query,
                    "referrer": string(e.get("rf")),
                    "referrerPage": string(e.get("rp")),
                    "title": string(e.get("tl")),
                    "time": ev.at,
                    "deviceOrientation": string(e.get("o")),
                    "loginUserId": ev.user,
                    "pageGroup": string(e.get("pg")),
                    "appVariable": map_text("var", variables),
                    "pageRequestId": joins.page_id(ai, ev.visitor, ev.session, ev.path, ev.at),
                    "vstRequestId": joins.visit_id(ai, ev.visitor, ev.session),
                },
            )
            return 0
        if kind in SAAS_ACTIONS:
            page_time = self._page_time(ai, ev, e.get("ptm"), "ptm")
            page_id = joins.page_id(ai, ev.visitor, ev.session, ev.path, page_time)
            elements = e.get("e")
            if type(elements) is not list or not elements:
                elements = [{}]
            for n, element in enumerate(elements):
                if type(element) is not dict:
                    raise Invalid("e", "expected a list of objects")
                at = integer("e.tm", element.get("tm")) or ev.at
                index = integer("e.idx", element.get("idx"))
                row = action(ev, ai, native, kind, at, index, string(element.get("x")), n, page_id)
                row["href"] = string(element.get("h"))
                row["requestValue"] = string(element.get("v"))
                row["info"] = string(element.get("obj"))
                rows.add("action", row)
            return 0
        if kind == "pvar":
            page_time = self._page_time(ai, ev, e.get("ptm"), "ptm")
            page_id = joins.page_id(ai, ev.visitor, ev.session, ev.path, page_time)
            self._pvar(rows, ev, page_time, map_text("var", variables), page_id)
            return 0
        if kind == "evar":
            rows.add("evar", evar(ev, map_text("var", variables)))
            return 0
        if kind == "vstr":
            rows.add("vstr", vstr(ev, map_text("var", variables)))
            return 0
        raise KeyError(kind)
