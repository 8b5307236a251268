"""The rows of SDK events: what a request tells besides its body, the fields every type
shares, and the builders of the visit and activation rows (both families)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from rawexport.ingest import joins, useragent
from rawexport.ingest.sdkvalues import (
    Invalid,
    coordinate,
    device_type,
    integer,
    map_text,
    platform_name,
    string,
    text,
)
from rawexport.ingest.validate import RowChunk

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


@dataclass(frozen=True)
class Origin:
    """What the request tells about its events besides their bodies."""

    ai: str
    received: int  # the receive time, ms: every row's sendTime
    ip: str | None = None
    user_agent: str = ""
    route_platform: str | None = None  # SaaS routes name it: "android", "ios", "web"


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
class Event:
    """The fields every type shares, read once from an event of either family."""

    visitor: str | None
    session: str | None
    user: str | None
    at: int | None
    domain: str | None
    path: str | None
    query: str | None


# ---- the fields each family names alike ---------------------------------------------------


def cdp_common(e: dict[str, Any]) -> Event:
    return Event(
        visitor=string(e.get("deviceId")),
        session=string(e.get("sessionId")),
        user=string(e.get("userId")),
        at=integer("timestamp", e.get("timestamp")),
        domain=string(e.get("domain")),
        path=string(e.get("path")),
        query=string(e.get("query")),
    )


def saas_common(e: dict[str, Any]) -> Event:
    user = string(e.get("cs1"))
    if user is not None and "sdk_type" in e and user.startswith("user:"):
        # GrowingIOSDK (py2) sends the login user id it was given as "user:<id>"
        user = user[5:] or None
    return Event(
        visitor=string(e.get("u")),
        session=string(e.get("s")),
        user=user,
        at=integer("tm", e.get("tm")),
        domain=string(e.get("d")),
        path=string(e.get("p")),
        query=string(e.get("q")),
    )


def need_visitor(ev: Event, name: str) -> None:
    if not ev.visitor:
        raise Invalid(name, "required")


def custom_event(
    ev: Event, name: str, page_time: int | None, page_id: str | None, variables: str | None
) -> dict[str, Any]:
    return {
        "visitUserId": ev.visitor,
        "sessionId": ev.session,
        "time": ev.at,
        "pageTime": page_time,
        "domain": ev.domain,
        "page": ev.path,
        "queryParameters": ev.query,
        "eventName": name,
        "eventVariable": variables,
        "loginUserId": ev.user,
        "pageRequestId": page_id,
    }


def action(
    ev: Event,
    ai: str,
    native: bool,
    request_type: str,
    at: int | None,
    index: int | None,
    xpath: str | None,
    element: int,
    page_id: str | None,
) -> dict[str, Any]:
    """An action row of one element (its href, value and info added by the family)."""
    return {
        "visitUserId": ev.visitor,
        "sessionId": ev.session,
        "requestType": request_type,
        "domain": ev.domain,
        "page": ev.path,
        "time": at,
        "index": index,
        "pageRequestId": page_id,
        "actionRequestId": joins.action_id(
            native, ai, ev.visitor, ev.session, request_type, at, xpath, index, element
        ),
    }


def evar(ev: Event, variables: str | None) -> dict[str, Any]:
    return {
        "visitUserId": ev.visitor,
        "sessionId": ev.session,
        "time": ev.at,
        "domain": ev.domain,
        "conversionVariable": variables,
    }


def vstr(ev: Event, variables: str | None) -> dict[str, Any]:
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


def visit(
    e: dict[str, Any],
    keys: _VisitKeys,
    ev: Event,
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
    system = string(e.get(keys.system)) or (platform if native else None)
    return {
        "visitUserId": ev.visitor,
        "sessionId": ev.session,
        "accountVersion": string(e.get(keys.sdk_version)),
        "platform": platform_name(platform),
        "domain": ev.domain,
        "page": ev.path,
        "queryParameters": ev.query,
        "referrer": string(e.get(keys.referrer)) if web or keys is SAAS_VISIT else None,
        "language": string(e.get(keys.language)),
        "screenHeight": string(e.get(keys.height)),
        "screenWidth": string(e.get(keys.width)),
        "time": ev.at,
        "ip": origin.ip,
        "userAgent": (origin.user_agent or None) if web else string(own_agent),
        "operatingSystem": system or (agent.operating_system if agent else None),
        "operatingSystemVersion": string(e.get(keys.system_version))
        or (agent.os_version if agent else None),
        "clientVersion": None if web and keys is CDP_VISIT else string(e.get(keys.app_version)),
        "channel": string(e.get(keys.channel)),
        "deviceBrand": string(e.get(keys.brand)) or (agent.brand if agent else None),
        "deviceModel": string(e.get(keys.model)) or (agent.model if agent else None),
        "deviceType": device_type(e.get(keys.kind)) or (agent.device_type if agent else None),
        "deviceOrientation": string(e.get(keys.orientation)),
        "latitude": coordinate(keys.latitude, e.get(keys.latitude)),
        "longitude": coordinate(keys.longitude, e.get(keys.longitude)),
        "vstRequestId": joins.visit_id(origin.ai, ev.visitor, ev.session),
        "idfa": string(e.get(keys.idfa)),
        "androidId": string(e.get(keys.android_id)),
        "IMEI": string(e.get("imei")),
    }


def activation(
    e: dict[str, Any], ev: Event, attrs: dict[str, Any], origin: Origin, platform: str | None
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
        "idfa": string(e.get("idfa") or e.get("ui")),
        "imei": string(e.get("imei")),
        "uuid": string(e.get("idfv") or e.get("iv")),
        "androidId": string(e.get("androidId") or e.get("adrid")),
        "ip": origin.ip,
        "userAgent": string(attrs.get("userAgent") or e.get("ua")) or origin.user_agent or None,
        "platform": platform_name(platform),
        "operatingSystemVersion": string(e.get("platformVersion") or e.get("osv")),
        "linkId": string(attrs.get("deep_link_id") or e.get("link_id")),
        "adsVariable": map_text("deep_params", params),
        "OAID": string(e.get("oaid")),
    }
