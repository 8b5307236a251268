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

from rawexport.ingest import joins, useragent
from rawexport.ingest.validate import INT64_MAX, INT64_MIN, Batch, Rejection, RowChunk

# Platforms of the web SDK (browser pages, WeChat's web view): their requests come from
# the browser itself, so the User-Agent header is the visitor's.
WEB_PLATFORMS = {"web", "wxwv", "h5"}
# Native apps: `ma:` action ids, previous page names in referrerPage.
NATIVE_PLATFORMS = {"android", "ios", "harmonyos", "harmony", "ohos"}
ACTION_TYPES = {"VIEW_CLICK": "clck", "VIEW_CHANGE": "chng", "FORM_SUBMIT": "sbmt"}
SAAS_ACTIONS = {"clck", "chng", "sbmt"}
ACTIVATIONS = {"$app_activation", "$app_defer"}
CDP_TYPES = {
    "VISIT",
    "PAGE",
    "CUSTOM",
    "PAGE_ATTRIBUTES",
    "CONVERSION_VARIABLES",
    "VISITOR_ATTRIBUTES",
    "LOGIN_USER_ATTRIBUTES",
    "ACTIVATE",
    "APP_CLOSED",
    *ACTION_TYPES,
}
SAAS_TYPES = {"vst", "page", "cstm", "pvar", "evar", "vstr", "ppl", "activate", "imp", "cls",
              "reengage", *SAAS_ACTIONS}  # fmt: skip
NOT_EXPORTED_CDP = {"APP_CLOSED"}
NOT_EXPORTED_SAAS = {"imp", "cls", "reengage"}
LOGIN_KEY = "$loginUserId"


class Invalid(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Origin:
    """What the request tells about its events besides their bodies."""

    ai: str
    received: int  # the receive time, ms: every row's sendTime
    ip: str | None = None
    user_agent: str = ""
    route_platform: str | None = None  # SaaS routes name it: "android", "ios", "web"


@dataclass
class Filed:
    """The rows of a request's events per data type, and what was not exported."""

    batch: Batch
    events: int = 0  # events in the request
    unexported: int = 0  # accepted, no v2 type (impressions, app closed, items, ...)
    duplicates: int = 0  # re-sends of events already taken
    prints: list[int] = field(default_factory=list)  # fingerprints of the new events


# ---- values -------------------------------------------------------------------------------


def text(value: Any) -> str | None:
    """A scalar column's text: strings as they are, numbers in their JSON spelling."""
    if value is None or type(value) is str:
        return value
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "||".join(t for t in map(text, value) if t is not None)
    return orjson.dumps(value).decode()


def integer(name: str, value: Any) -> int | None:
    """A time or index: an integer, a float rounded (PHP sends floats), digits in text."""
    if value is None or value == "":
        return None
    if type(value) is int:
        out = value
    elif type(value) is float and value == value and abs(value) < 9.3e18:
        out = round(value)
    elif type(value) is str and value.strip().lstrip("-").isdigit() and value.isascii():
        out = int(value)
    else:
        raise Invalid(name, "expected an integer")
    if not INT64_MIN <= out <= INT64_MAX:
        raise Invalid(name, "out of the 64-bit integer range")
    return out


def number(name: str, value: Any) -> float | None:
    if value is None or value == "":
        return None
    if type(value) is bool:
        raise Invalid(name, "expected a number")
    if isinstance(value, int | float):
        return float(value)
    if type(value) is str:
        try:
            return float(value)
        except ValueError:
            pass
    raise Invalid(name, "expected a number")


def coordinate(name: str, value: Any) -> float | None:
    """Latitude / longitude: 0 is what the SDKs send when they have none."""
    out = number(name, value)
    return None if not out or out != out else out


def map_text(name: str, value: Any, extra: dict[str, str] | None = None) -> str | None:
    """A map column: compact JSON of an object whose values are all text."""
    if value is None or value == "":
        value = {}
    if type(value) is str:  # some SDKs send the map as JSON text
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise Invalid(name, "expected an object") from None
    if type(value) is not dict:
        raise Invalid(name, "expected an object")
    out: dict[str, str] = {}
    for k, v in value.items():
        t = text(v)
        if t is not None:
            out[str(k)] = t
    if extra:
        out.update(extra)
    if not out:
        return None
    try:
        return orjson.dumps(out).decode()
    except orjson.JSONEncodeError:
        raise Invalid(name, "not valid UTF-8 text") from None


def _string(value: Any) -> str | None:
    if type(value) is str:
        return value or None
    return text(value) or None


def platform_name(value: Any) -> str | None:
    p = _string(value)
    if p is not None and p.lower() == "web":
        return "Web"
    return p


def device_type(value: Any) -> str | None:
    """GrowingIO's deviceType: 1 phone, 0 tablet (CDP sends PHONE/PAD or the model)."""
    t = _string(value)
    if t is None:
        return None
    low = t.lower()
    if low in ("0", "1"):
        return low
    if low.startswith(("phone", "iphone", "ipod")):
        return "1"
    if low.startswith(("pad", "ipad", "tablet")):
        return "0"
    return None


# ---- rows -----------------------------------------------------------------------------------


class Rows:
    """Rows of one request per data type, sendTime stamped."""

    def __init__(self, received: int) -> None:
        self.received = received
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def add(self, data_type: str, row: dict[str, Any]) -> None:
        row["sendTime"] = self.received
        rows = self.rows.get(data_type)
        if rows is None:
            rows = self.rows[data_type] = []
        rows.append(row)

    def chunks(self) -> dict[str, Any]:
        return {t: RowChunk(t, rows) for t, rows in self.rows.items() if rows}


@dataclass(slots=True)
class _Event:
    """The fields every type shares, read once from an event of either family."""

    visitor: str | None
    session: str | None
    user: str | None
    at: int | None
    domain: str | None
    path: str | None
    query: str | None


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

    def _page_time(self, ai: str, ev: _Event, sent: Any, name: str) -> int | None:
        """The time of the page an event belongs to: sent by the SDK, else the latest page of
        its path shown before it."""
        page_time = integer(name, sent)
        if page_time is None and ev.visitor and ev.path is not None:
            page_time = self.sessions.pages.shown(ai, ev.visitor, ev.session or "", ev.path, ev.at)
        return page_time

    def _link_login(self, ai: str, ev: _Event) -> None:
        """An event with no visitor but a login user: the visitor last seen as that user."""
        if ev.visitor or not ev.user:
            return
        seen = self.sessions.logins.visitor(ai, ev.user, ev.at)
        if seen is not None:
            ev.visitor, linked_session = seen
            ev.session = ev.session or linked_session

    def _remember(self, ai: str, ev: _Event, page: bool) -> None:
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
        common: Callable[[dict[str, Any]], _Event],
        is_page: Callable[[dict[str, Any]], bool],
        one: Callable[[Rows, Origin, dict[str, Any], _Event], int],
        type_field: str,
    ) -> Filed:
        filed = Filed(Batch(), events=len(events))
        rows = Rows(origin.received)
        fresh = self._fresh(origin.ai, events, filed)
        parsed: list[tuple[int, dict[str, Any], _Event]] = []
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
        self, rows: Rows, ev: _Event, attributes: Any, user_key: Any, name: str
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
            _cdp_common,
            lambda e: e.get("eventType") == "PAGE",
            self._cdp_one,
            "eventType",
        )

    def _cdp_one(self, rows: Rows, origin: Origin, e: dict[str, Any], ev: _Event) -> int:
        kind = e.get("eventType")
        if type(kind) is not str:
            raise Invalid("eventType", "required" if kind is None else "expected a string")
        if kind not in CDP_TYPES:
            raise KeyError(kind)
        ai = origin.ai
        platform = _string(e.get("platform"))
        low = (platform or "").lower()
        web = low in WEB_PLATFORMS
        native = low in NATIVE_PLATFORMS
        attributes = e.get("attributes")
        if kind in NOT_EXPORTED_CDP:
            return 1
        if kind == "LOGIN_USER_ATTRIBUTES":
            return self._login_attributes(rows, ev, attributes, e.get("userKey"), "attributes")
        if kind == "CUSTOM":
            name = _string(e.get("eventName"))
            if not name:
                raise Invalid("eventName", "required")
            page_time = self._page_time(ai, ev, e.get("pageShowTimestamp"), "pageShowTimestamp")
            rows.add(
                "custom_event",
                {
                    "visitUserId": ev.visitor,
                    "sessionId": ev.session,
                    "time": ev.at,
                    "pageTime": page_time,
                    "domain": ev.domain,
                    "page": ev.path,
                    "queryParameters": ev.query,
                    "eventName": name,
                    "eventVariable": map_text("attributes", attributes),
                    "loginUserId": ev.user,
                    "pageRequestId": joins.page_id(ai, ev.visitor, ev.session, ev.path, page_time),
                },
            )
            return 0
        if kind == "ACTIVATE":
            if _string(e.get("eventName")) not in ACTIVATIONS:
                return 1  # re-engagements: no v2 type
            attrs = attributes if type(attributes) is dict else {}
            rows.add("ads_track_activation", _activation(e, ev, attrs, origin, platform))
            return 0
        _need_visitor(ev, "deviceId")
        if kind == "VISIT":
            rows.add("visit", _visit(e, CDP_VISIT, ev, origin, platform, web, native))
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
                    "referrer": _string(e.get("referralPage")) if web else None,
                    "referrerPage": None if web else _string(e.get("referralPage")),
                    "title": _string(e.get("title")),
                    "time": ev.at,
                    "deviceOrientation": _string(e.get("orientation")),
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
            rows.add(
                "action",
                {
                    "visitUserId": ev.visitor,
                    "sessionId": ev.session,
                    "requestType": request_type,
                    "domain": ev.domain,
                    "page": ev.path,
                    "time": ev.at,
                    "href": _string(e.get("hyperlink")),
                    "requestValue": _string(e.get("textValue")),
                    "index": index,
                    "pageRequestId": joins.page_id(ai, ev.visitor, ev.session, ev.path, page_time),
                    "actionRequestId": joins.action_id(
                        native,
                        ai,
                        ev.visitor,
                        ev.session,
                        request_type,
                        ev.at,
                        _string(e.get("xpath")),
                        index,
                        0,
                    ),
                },
            )
            return 0
        if kind == "PAGE_ATTRIBUTES":
            page_time = self._page_time(ai, ev, e.get("pageShowTimestamp"), "pageShowTimestamp")
            page_id = joins.page_id(ai, ev.visitor, ev.session, ev.path, page_time)
            self._pvar(rows, ev, page_time, map_text("attributes", attributes), page_id)
            return 0
        if kind == "CONVERSION_VARIABLES":
            rows.add("evar", _evar(ev, map_text("attributes", attributes)))
            return 0
        if kind == "VISITOR_ATTRIBUTES":
            rows.add("vstr", _vstr(ev, map_text("attributes", attributes)))
            return 0
        raise KeyError(kind)

    @staticmethod
    def _pvar(
        rows: Rows, ev: _Event, page_time: int | None, variables: str | None, page_id: str | None
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
            kept, origin, _saas_common, lambda e: e.get("t") == "page", self._saas_one, "t"
        )
        filed.events = len(events)
        back = [Rejection(index[r.index], r.field, r.reason) for r in filed.batch.rejected]
        filed.batch.rejected = sorted(wrong + back, key=lambda r: r.index)
        return filed

    def _saas_one(self, rows: Rows, origin: Origin, e: dict[str, Any], ev: _Event) -> int:
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
            name = _string(e.get("n"))
            if not name:
                raise Invalid("n", "required")
            page_time = self._page_time(ai, ev, e.get("ptm"), "ptm")
            if variables is None and type(e.get("e")) is dict:
                variables = e["e"]  # the py2 SDK's name for it
            rows.add(
                "custom_event",
                {
                    "visitUserId": ev.visitor,
                    "sessionId": ev.session,
                    "time": ev.at,
                    "pageTime": page_time,
                    "domain": ev.domain,
                    "page": ev.path,
                    "queryParameters": ev.query,
                    "eventName": name,
                    "eventNumber": number("num", e.get("num")),
                    "eventVariable": map_text("var", variables),
                    "loginUserId": ev.user,
                    "pageRequestId": _string(e.get("prid"))
                    or joins.page_id(ai, ev.visitor, ev.session, ev.path, page_time),
                },
            )
            return 0
        if kind == "activate":
            rows.add("ads_track_activation", _activation(e, ev, {}, origin, platform))
            return 0
        _need_visitor(ev, "u")
        if kind == "vst":
            rows.add("visit", _visit(e, SAAS_VISIT, ev, origin, platform, web, native))
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
                    "referrer": _string(e.get("rf")),
                    "referrerPage": _string(e.get("rp")),
                    "title": _string(e.get("tl")),
                    "time": ev.at,
                    "deviceOrientation": _string(e.get("o")),
                    "loginUserId": ev.user,
                    "pageGroup": _string(e.get("pg")),
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
                rows.add(
                    "action",
                    {
                        "visitUserId": ev.visitor,
                        "sessionId": ev.session,
                        "requestType": kind,
                        "domain": ev.domain,
                        "page": ev.path,
                        "time": at,
                        "href": _string(element.get("h")),
                        "requestValue": _string(element.get("v")),
                        "index": index,
                        "info": _string(element.get("obj")),
                        "pageRequestId": page_id,
                        "actionRequestId": joins.action_id(
                            native,
                            ai,
                            ev.visitor,
                            ev.session,
                            kind,
                            at,
                            _string(element.get("x")),
                            index,
                            n,
                        ),
                    },
                )
            return 0
        if kind == "pvar":
            page_time = self._page_time(ai, ev, e.get("ptm"), "ptm")
            page_id = joins.page_id(ai, ev.visitor, ev.session, ev.path, page_time)
            self._pvar(rows, ev, page_time, map_text("var", variables), page_id)
            return 0
        if kind == "evar":
            rows.add("evar", _evar(ev, map_text("var", variables)))
            return 0
        if kind == "vstr":
            rows.add("vstr", _vstr(ev, map_text("var", variables)))
            return 0
        raise KeyError(kind)


# ---- the fields each family names alike ---------------------------------------------------


def _cdp_common(e: dict[str, Any]) -> _Event:
    return _Event(
        visitor=_string(e.get("deviceId")),
        session=_string(e.get("sessionId")),
        user=_string(e.get("userId")),
        at=integer("timestamp", e.get("timestamp")),
        domain=_string(e.get("domain")),
        path=_string(e.get("path")),
        query=_string(e.get("query")),
    )


def _saas_common(e: dict[str, Any]) -> _Event:
    user = _string(e.get("cs1"))
    if user is not None and "sdk_type" in e and user.startswith("user:"):
        # GrowingIOSDK (py2) sends the login user id it was given as "user:<id>"
        user = user[5:] or None
    return _Event(
        visitor=_string(e.get("u")),
        session=_string(e.get("s")),
        user=user,
        at=integer("tm", e.get("tm")),
        domain=_string(e.get("d")),
        path=_string(e.get("p")),
        query=_string(e.get("q")),
    )


def _need_visitor(ev: _Event, name: str) -> None:
    if not ev.visitor:
        raise Invalid(name, "required")


def _evar(ev: _Event, variables: str | None) -> dict[str, Any]:
    return {
        "visitUserId": ev.visitor,
        "sessionId": ev.session,
        "time": ev.at,
        "domain": ev.domain,
        "conversionVariable": variables,
    }


def _vstr(ev: _Event, variables: str | None) -> dict[str, Any]:
    return {
        "visitUserId": ev.visitor,
        "sessionId": ev.session,
        "time": ev.at,
        "visitorVariable": variables,
    }


@dataclass(frozen=True)
class _VisitKeys:
    """Where each family keeps the fields of a visit."""

    sdk_version: str
    referrer: str
    language: str
    height: str
    width: str
    user_agent: str  # a native app's own User-Agent, if it sends one
    system: str
    system_version: str
    app_version: str
    channel: str
    brand: str
    model: str
    kind: str
    orientation: str
    latitude: str
    longitude: str
    idfa: str
    android_id: str


CDP_VISIT = _VisitKeys(
    "sdkVersion", "referralPage", "language", "screenHeight", "screenWidth", "$userAgent",
    "operatingSystem", "platformVersion", "appVersion", "appChannel", "deviceBrand",
    "deviceModel", "deviceType", "orientation", "latitude", "longitude", "idfa", "androidId",
)  # fmt: skip
SAAS_VISIT = _VisitKeys(
    "av", "rf", "l", "sh", "sw", "ua", "os", "osv", "cv", "ch", "db", "dm", "ph", "o", "lat",
    "lng", "ui", "adrid",
)  # fmt: skip


def _visit(
    e: dict[str, Any],
    keys: _VisitKeys,
    ev: _Event,
    origin: Origin,
    platform: str | None,
    web: bool,
    native: bool,
) -> dict[str, Any]:
    """A visit row. Browsers: the User-Agent header, and what it says of the device where
    the event does not; native apps: the platform is the operating system; the web SDK's
    appVersion is the site's version option, not an app's: no clientVersion."""
    agent = useragent.parse(origin.user_agent) if web and origin.user_agent else None
    attrs = e.get("attributes")
    own_agent = e.get(keys.user_agent) or (
        attrs.get(keys.user_agent) if type(attrs) is dict else None
    )
    system = _string(e.get(keys.system)) or (platform if native else None)
    return {
        "visitUserId": ev.visitor,
        "sessionId": ev.session,
        "accountVersion": _string(e.get(keys.sdk_version)),
        "platform": platform_name(platform),
        "domain": ev.domain,
        "page": ev.path,
        "queryParameters": ev.query,
        "referrer": _string(e.get(keys.referrer)) if web or keys is SAAS_VISIT else None,
        "language": _string(e.get(keys.language)),
        "screenHeight": _string(e.get(keys.height)),
        "screenWidth": _string(e.get(keys.width)),
        "time": ev.at,
        "ip": origin.ip,
        "userAgent": (origin.user_agent or None) if web else _string(own_agent),
        "operatingSystem": system or (agent.operating_system if agent else None),
        "operatingSystemVersion": _string(e.get(keys.system_version))
        or (agent.os_version if agent else None),
        "clientVersion": None if web and keys is CDP_VISIT else _string(e.get(keys.app_version)),
        "channel": _string(e.get(keys.channel)),
        "deviceBrand": _string(e.get(keys.brand)) or (agent.brand if agent else None),
        "deviceModel": _string(e.get(keys.model)) or (agent.model if agent else None),
        "deviceType": device_type(e.get(keys.kind)) or (agent.device_type if agent else None),
        "deviceOrientation": _string(e.get(keys.orientation)),
        "latitude": coordinate(keys.latitude, e.get(keys.latitude)),
        "longitude": coordinate(keys.longitude, e.get(keys.longitude)),
        "vstRequestId": joins.visit_id(origin.ai, ev.visitor, ev.session),
        "idfa": _string(e.get(keys.idfa)),
        "androidId": _string(e.get(keys.android_id)),
        "IMEI": _string(e.get("imei")),
    }


def _activation(
    e: dict[str, Any], ev: _Event, attrs: dict[str, Any], origin: Origin, platform: str | None
) -> dict[str, Any]:
    """ads_track_activation of a CDP ACTIVATE (device ids in fields, deep-link data in
    attributes) or a SaaS `activate` (short keys); campaign and channel names come from a
    link registry GrowingIO kept, which the SDKs do not send: empty."""
    params: Any = attrs.get("deep_params") if attrs else e.get("var")
    if type(params) is str:
        try:
            params = orjson.loads(params) if params.strip() else None
        except orjson.JSONDecodeError:
            params = {"deep_params": params}
        if type(params) is not dict:
            params = None if params is None else {"deep_params": text(params) or ""}
    return {
        "visitUserId": ev.visitor,
        "idfa": _string(e.get("idfa") or e.get("ui")),
        "imei": _string(e.get("imei")),
        "uuid": _string(e.get("idfv") or e.get("iv")),
        "androidId": _string(e.get("androidId") or e.get("adrid")),
        "ip": origin.ip,
        "userAgent": _string(attrs.get("userAgent") or e.get("ua")) or origin.user_agent or None,
        "platform": platform_name(platform),
        "operatingSystemVersion": _string(e.get("platformVersion") or e.get("osv")),
        "linkId": _string(attrs.get("deep_link_id") or e.get("link_id")),
        "adsVariable": map_text("deep_params", params),
        "OAID": _string(e.get("oaid")),
    }
