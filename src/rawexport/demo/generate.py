"""Deterministic synthetic events of the 10 data types, with the documented joins holding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from rawexport.demo import samples
from rawexport.demo.arrays import (
    below,
    hex_text,
    int_text,
    join,
    keep,
    key_of,
    mix,
    uuid_text,
)
from rawexport.demo.samples import I64, U64
from rawexport.schema import DATA_TYPE_NAMES
from rawexport.store import EventStore
from rawexport.store.events import arrow_schema
from rawexport.timeutil import HOUR_MS

Bools = npt.NDArray[np.bool_]
Columns = dict[str, pa.Array]

CHUNK_ROWS = 500_000

# Share of each type in a project's traffic; normalised over the selected types.
WEIGHTS: dict[str, int] = {
    "visit": 8,
    "page": 30,
    "action": 25,
    "action_tag": 8,
    "custom_event": 12,
    "pvar": 6,
    "evar": 4,
    "vstr": 3,
    "ads_track_activation": 2,
    "ads_track_click": 2,
}

WEB, IOS, ANDROID = 0, 1, 2  # platform codes; 3 is a mini-program
_LINKS = 24
_RULES = 40


def split_counts(total: int, data_types: Sequence[str]) -> dict[str, int]:
    """total rows split over data_types by WEIGHTS (largest remainder), each ≥ 1 if possible."""
    weight = sum(WEIGHTS[t] for t in data_types)
    counts = [total * WEIGHTS[t] // weight for t in data_types]
    by_remainder = sorted(
        range(len(data_types)), key=lambda i: (-(total * WEIGHTS[data_types[i]] % weight), i)
    )
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    if total >= len(data_types):
        for i in range(len(counts)):
            if counts[i] == 0:
                counts[max(range(len(counts)), key=counts.__getitem__)] -= 1
                counts[i] = 1
    return dict(zip(data_types, counts, strict=True))


# ---- value pools: a good share carry what the CSV dialect must escape -----------------------


class _Hour:
    """The entities of one project hour; their attributes are functions of their index."""

    def __init__(self, seed: int, ai: str, hour_ms: int, refs: dict[str, int]) -> None:
        self._hour = (seed, ai, hour_ms)
        self._project = (seed, ai)
        self.hour_ms = hour_ms
        self.visits = refs["visit"]
        self.pages = refs["page"]
        self.actions = refs["action"]
        self.devices = max(refs["ads_track_click"], refs["ads_track_activation"])

    def h(self, name: str, idx: U64, project: bool = False) -> U64:
        return mix(key_of(*(self._project if project else self._hour), name), idx)

    def ints(self, name: str, idx: U64, lo: int, hi: int) -> I64:
        return lo + below(self.h(name, idx), hi - lo)

    def chance(self, name: str, idx: U64, p: float) -> Bools:
        return self.h(name, idx) >> np.uint64(11) < np.uint64(p * 2**53)

    def pick(self, pool: pa.Array, name: str, idx: U64, null_p: float = 0.0) -> pa.Array:
        h = self.h(name, idx)
        choice = below(h, len(pool))
        if not null_p:
            return pool.take(pa.array(choice))
        nulls = h & np.uint64(0xFFFFFF) < np.uint64(null_p * 2**24)
        return pool.take(pa.array(choice, mask=nulls))

    def send_time(self, name: str, idx: U64) -> I64:
        return self.hour_ms + self.ints(name + ".send", idx, 0, HOUR_MS)

    def client_time(self, name: str, idx: U64, send: I64) -> I64:
        return send - self.ints(name + ".lag", idx, 1, 3_000)

    def ref(self, name: str, idx: U64, n: int) -> U64:
        return below(self.h(name, idx), n).view(np.uint64)

    # visits (one visitor per visit)
    def platform(self, v: U64) -> I64:
        roll = self.h("visit.platform", v) % samples.PLATFORM_CUM[-1]
        found: I64 = np.searchsorted(samples.PLATFORM_CUM, roll, side="right").astype(np.int64)
        return found

    def visitor(self, v: U64) -> pa.Array:
        return uuid_text(self.h("visit.user.a", v), self.h("visit.user.b", v))

    def session(self, v: U64) -> pa.Array:
        return uuid_text(self.h("visit.session.a", v), self.h("visit.session.b", v))

    def visit_id(self, v: U64) -> pa.Array:
        return hex_text(16, self.h("visit.id", v))

    def domain(self, v: U64, platform: I64) -> pa.Array:
        return samples.DOMAINS.take(platform, self.h("visit.domain", v))

    def login(self, v: U64) -> pa.Array:
        number = int_text(self.ints("visit.login.n", v, 1, 10_000_000))
        login = join(self.pick(samples.LOGIN_PREFIXES, "visit.login.prefix", v), number)
        return keep(self.chance("visit.login", v, 0.4), login)

    # pages (every visit has at least one: page v belongs to visit v)
    def page_visit(self, j: U64) -> U64:
        return np.where(j < self.visits, j, self.ref("page.visit", j, self.visits))

    def page_id(self, j: U64) -> pa.Array:
        return hex_text(20, self.h("page.id.a", j), self.h("page.id.b", j))

    def page_path(self, j: U64, platform: I64) -> pa.Array:
        return samples.PAGE_PATHS.take(platform, self.h("page.path", j))

    def page_query(self, j: U64) -> pa.Array:
        return self.pick(samples.QUERIES, "page.query", j, null_p=0.4)

    def page_time(self, j: U64) -> I64:
        return self.client_time("page", j, self.send_time("page", j))

    # actions
    def action_page(self, a: U64) -> U64:
        return self.ref("action.page", a, self.pages)

    def action_id(self, a: U64) -> pa.Array:
        """Like wa:0:24:1356477892:0 (wa web, ma mobile); the action index keeps it unique."""
        mobile = self.platform(self.page_visit(self.action_page(a))) != WEB
        kind = pc.if_else(pa.array(mobile), "ma", "wa")
        n = a.astype(np.int64)
        number = int_text(self.ints("action.id", a, 1_000_000_000, 10_000_000_000))
        tail = int_text(self.ints("action.id.tail", a, 0, 4))
        return join(kind, int_text(n % 100), int_text(n // 100), number, tail, sep=":")

    # ads: devices and tracking links
    def device_platform(self, d: U64) -> I64:
        return np.where(self.chance("device.ios", d, 0.45), IOS, ANDROID).astype(np.int64)

    def device_ids(self, d: U64) -> Columns:
        ios = self.device_platform(d) == IOS
        android = ~ios
        imei = int_text(self.ints("device.imei", d, 860_000_000_000_000, 870_000_000_000_000))
        return {
            "idfa": keep(
                ios, uuid_text(self.h("device.idfa.a", d), self.h("device.idfa.b", d), True)
            ),
            "imei": keep(android & self.chance("device.has_imei", d, 0.6), imei),
            "androidId": keep(android, hex_text(16, self.h("device.android", d))),
            "OAID": keep(
                android & self.chance("device.has_oaid", d, 0.5),
                uuid_text(self.h("device.oaid.a", d), self.h("device.oaid.b", d)),
            ),
            "uuid": uuid_text(self.h("device.uuid.a", d), self.h("device.uuid.b", d)),
        }

    def link_columns(self, name: str, idx: U64) -> Columns:
        link = self.ref(name + ".link", idx, _LINKS)
        campaign, channel = link % np.uint64(6), link % np.uint64(4)
        return {
            "linkId": hex_text(10, self.h("link.id", link, project=True)),
            "campaignId": hex_text(12, self.h("campaign.id", campaign, project=True)),
            "channelId": hex_text(8, self.h("channel.id", channel, project=True)),
            "linkName": samples.LINK_NAMES.take(
                pa.array(link % np.uint64(len(samples.LINK_NAMES)))
            ),
            "campaignName": samples.CAMPAIGN_NAMES.take(pa.array(campaign)),
            "channelName": samples.CHANNEL_NAMES.take(pa.array(channel)),
            "adsVariable": self.pick(samples.ADS_VARIABLES, name + ".vars", idx, null_p=0.3),
        }


def _ip(hr: _Hour, name: str, idx: U64) -> pa.Array:
    octets = [int_text(hr.ints(f"{name}.ip{k}", idx, 1, 255)) for k in range(4)]
    return join(*octets, sep=".")


def _visit(hr: _Hour, v: U64) -> Columns:
    platform = hr.platform(v)
    mobile = platform != WEB
    send = hr.send_time("visit", v)
    device = hr.h("visit.device", v)
    screen = hr.h("visit.screen", v)
    ios = platform == IOS
    android = platform == ANDROID
    located = mobile & hr.chance("visit.located", v, 0.7)
    lat = np.round(18 + hr.ints("visit.lat", v, 0, 35_00000) / 1e5, 5)
    lng = np.round(73 + hr.ints("visit.lng", v, 0, 62_00000) / 1e5, 5)
    return {
        "visitUserId": hr.visitor(v),
        "sessionId": hr.session(v),
        "accountVersion": samples.SDK_VERSIONS.take(platform, hr.h("visit.sdk", v)),
        "platform": samples.PLATFORMS.take(pa.array(platform)),
        "domain": hr.domain(v, platform),
        "page": hr.page_path(v, platform),
        "queryParameters": hr.page_query(v),
        "referrer": hr.pick(samples.REFERRERS, "visit.referrer", v, null_p=0.4),
        "language": hr.pick(samples.LANGUAGES, "visit.language", v),
        "screenHeight": samples.SCREEN_HEIGHTS.take(platform, screen),
        "screenWidth": samples.SCREEN_WIDTHS.take(platform, screen),
        "time": pa.array(hr.client_time("visit", v, send)),
        "sendTime": pa.array(send),
        "ip": _ip(hr, "visit", v),
        "userAgent": samples.USER_AGENTS.take(platform, hr.h("visit.ua", v)),
        "operatingSystem": samples.OS_NAMES.take(platform, hr.h("visit.os", v)),
        "operatingSystemVersion": samples.OS_VERSIONS.take(platform, hr.h("visit.osv", v)),
        "clientVersion": samples.CLIENT_VERSIONS.take(platform, hr.h("visit.client", v)),
        "channel": samples.CHANNELS.take(platform, hr.h("visit.channel", v)),
        "deviceBrand": samples.BRANDS.take(platform, device),
        "deviceModel": samples.MODELS.take(platform, device),
        "deviceType": samples.DEVICE_TYPES.take(platform, hr.h("visit.device_type", v)),
        "deviceOrientation": keep(mobile, hr.pick(samples.ORIENTATIONS, "visit.orient", v)),
        "latitude": pa.array(lat, mask=~located),
        "longitude": pa.array(lng, mask=~located),
        "vstRequestId": hr.visit_id(v),
        "idfa": keep(ios, uuid_text(hr.h("visit.idfa.a", v), hr.h("visit.idfa.b", v), True)),
        "androidId": keep(android, hex_text(16, hr.h("visit.android", v))),
        "IMEI": keep(android, int_text(hr.ints("visit.imei", v, 10**14, 10**15))),
    }


def _page(hr: _Hour, j: U64) -> Columns:
    v = hr.page_visit(j)
    platform = hr.platform(v)
    send = hr.send_time("page", j)
    cols = {
        "visitUserId": hr.visitor(v),
        "sessionId": hr.session(v),
        "platform": samples.PLATFORMS.take(pa.array(platform)),
        "domain": hr.domain(v, platform),
        "page": hr.page_path(j, platform),
        "queryParameters": hr.page_query(j),
        "referrer": hr.pick(samples.REFERRERS, "page.referrer", j, null_p=0.3),
        "referrerPage": samples.REFERRER_PAGES.take(platform, hr.h("page.referrer_page", j)),
        "title": hr.pick(samples.TITLES, "page.title", j, null_p=0.05),
        "time": pa.array(hr.client_time("page", j, send)),
        "sendTime": pa.array(send),
        "deviceOrientation": hr.pick(samples.ORIENTATIONS, "page.orient", j),
        "loginUserId": hr.login(v),
        "pageGroup": hr.pick(samples.PAGE_GROUPS, "page.group", j, null_p=0.8),
        "appVariable": hr.pick(samples.APP_VARIABLES, "page.app_vars", j, null_p=0.8),
        "pageRequestId": hr.page_id(j),
        "vstRequestId": hr.visit_id(v),
    }
    for i in range(2, 11):
        cols[f"customerAttributes{i}"] = hr.pick(samples.ATTRIBUTES, f"page.cs{i}", j, null_p=0.85)
    for i in range(1, 11):
        cols[f"pageAttributes{i}"] = hr.pick(samples.ATTRIBUTES, f"page.ps{i}", j, null_p=0.85)
    return cols


def _action(hr: _Hour, a: U64) -> Columns:
    j = hr.action_page(a)
    v = hr.page_visit(j)
    platform = hr.platform(v)
    send = hr.send_time("action", a)
    index = hr.ints("action.index", a, 0, 50)
    return {
        "visitUserId": hr.visitor(v),
        "sessionId": hr.session(v),
        "requestType": hr.pick(samples.REQUEST_TYPES, "action.type", a),
        "domain": hr.domain(v, platform),
        "page": hr.page_path(j, platform),
        "sendTime": pa.array(send),
        "time": pa.array(hr.client_time("action", a, send)),
        "href": hr.pick(samples.HREFS, "action.href", a, null_p=0.5),
        "requestValue": hr.pick(samples.REQUEST_VALUES, "action.value", a, null_p=0.1),
        "index": pa.array(index, mask=hr.chance("action.index_null", a, 0.4)),
        "info": hr.pick(samples.INFOS, "action.info", a, null_p=0.7),
        "pageRequestId": hr.page_id(j),
        "actionRequestId": hr.action_id(a),
    }


def _action_tag(hr: _Hour, t: U64) -> Columns:
    rule = hr.ref("action_tag.rule", t, _RULES)
    return {
        "sendTime": pa.array(hr.send_time("action_tag", t)),
        "actionRequestId": hr.action_id(hr.ref("action_tag.action", t, hr.actions)),
        "ruleId": hex_text(8, hr.h("rule.id", rule, project=True)),
    }


def _page_event(hr: _Hour, name: str, e: U64) -> tuple[Columns, U64, U64, I64]:
    """Columns an event attached to a page view shares with it, plus (page, visit, platform)."""
    j = hr.ref(name + ".page", e, hr.pages)
    v = hr.page_visit(j)
    platform = hr.platform(v)
    cols = {
        **_of_visit(hr, name, e, v),
        "pageTime": pa.array(hr.page_time(j)),
        "domain": hr.domain(v, platform),
        "page": hr.page_path(j, platform),
        "pageRequestId": hr.page_id(j),
    }
    return cols, j, v, platform


def _custom_event(hr: _Hour, e: U64) -> Columns:
    cols, j, v, _ = _page_event(hr, "custom_event", e)
    number = np.round(hr.ints("custom_event.number", e, 0, 100_000) / 100, 2)
    return {
        **cols,
        "queryParameters": hr.page_query(j),
        "eventName": hr.pick(samples.EVENT_NAMES, "custom_event.name", e),
        "eventNumber": pa.array(number, mask=hr.chance("custom_event.no_number", e, 0.3)),
        "eventVariable": hr.pick(samples.EVENT_VARIABLES, "custom_event.vars", e, null_p=0.15),
        "loginUserId": hr.login(v),
    }


def _pvar(hr: _Hour, e: U64) -> Columns:
    cols, _, _, _ = _page_event(hr, "pvar", e)
    return {**cols, "pageVariable": hr.pick(samples.PAGE_VARIABLES, "pvar.vars", e, null_p=0.05)}


def _of_visit(hr: _Hour, name: str, e: U64, v: U64) -> Columns:
    """The columns every event of visit v has: who, which session, when (sent and made)."""
    send = hr.send_time(name, e)
    return {
        "visitUserId": hr.visitor(v),
        "sessionId": hr.session(v),
        "time": pa.array(hr.client_time(name, e, send)),
        "sendTime": pa.array(send),
    }


def _visit_event(hr: _Hour, name: str, e: U64) -> tuple[Columns, U64]:
    v = hr.ref(name + ".visit", e, hr.visits)
    return _of_visit(hr, name, e, v), v


def _evar(hr: _Hour, e: U64) -> Columns:
    cols, v = _visit_event(hr, "evar", e)
    return {
        **cols,
        "domain": hr.domain(v, hr.platform(v)),
        "conversionVariable": hr.pick(samples.CONVERSION_VARIABLES, "evar.vars", e, null_p=0.05),
    }


def _vstr(hr: _Hour, e: U64) -> Columns:
    cols, _ = _visit_event(hr, "vstr", e)
    return {
        **cols,
        "visitorVariable": hr.pick(samples.VISITOR_VARIABLES, "vstr.vars", e, null_p=0.05),
    }


def _ads(hr: _Hour, name: str, e: U64) -> tuple[Columns, I64]:
    """Device and link columns; clicks and activations draw from the same devices and links."""
    d = hr.ref(name + ".device", e, hr.devices)
    platform = hr.device_platform(d)
    send = hr.send_time(name, e)
    cols = {
        **hr.device_ids(d),
        "ip": _ip(hr, "device", d),
        "userAgent": samples.USER_AGENTS.take(platform, hr.h("device.ua", d)),
        "platform": samples.PLATFORMS.take(pa.array(platform)),
        "operatingSystemVersion": samples.OS_VERSIONS.take(platform, hr.h("device.osv", d)),
        "sendTime": pa.array(send),
        **hr.link_columns(name, e),
    }
    return cols, send


def _activation(hr: _Hour, e: U64) -> Columns:
    cols, _ = _ads(hr, "ads_track_activation", e)
    return {**cols, "visitUserId": hr.visitor(hr.ref("ads_track_activation.visit", e, hr.visits))}


def _click(hr: _Hour, e: U64) -> Columns:
    cols, send = _ads(hr, "ads_track_click", e)
    query = hr.pick(samples.CLICK_URL_QUERIES, "ads_track_click.url", e)
    return {
        **cols,
        "eventTime": pa.array(hr.client_time("ads_track_click", e, send)),
        "clickUrl": join("https://datayi.cn/r", cols["linkId"], query),
    }


_BUILDERS: dict[str, Callable[[_Hour, U64], Columns]] = {
    "visit": _visit,
    "page": _page,
    "action": _action,
    "action_tag": _action_tag,
    "custom_event": _custom_event,
    "pvar": _pvar,
    "evar": _evar,
    "vstr": _vstr,
    "ads_track_activation": _activation,
    "ads_track_click": _click,
}


def rows(
    data_type: str, seed: int, ai: str, hour_ms: int, refs: dict[str, int], start: int, stop: int
) -> pa.Table:
    """Rows [start, stop) of data_type in one hour; refs holds every type's row count."""
    hr = _Hour(seed, ai, hour_ms, refs)
    cols = _BUILDERS[data_type](hr, np.arange(start, stop, dtype=np.uint64))
    schema = arrow_schema(data_type)
    return pa.Table.from_arrays([cols[name] for name in schema.names], schema=schema)


def generate(
    store: EventStore,
    ai: str,
    start_hour_ms: int,
    hours: int,
    events_per_hour: int,
    data_types: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Write synthetic events for hours starting at start_hour_ms; returns rows per type.

    Unselected types still have a row count (their share of events_per_hour) so the
    selected ones reference the same ids they would in a full run.
    """
    if start_hour_ms % HOUR_MS:
        raise ValueError(f"{start_hour_ms} is not the start of an hour")
    if hours < 0 or events_per_hour < 0:
        raise ValueError("hours and events_per_hour must be >= 0")
    selected = list(dict.fromkeys(data_types if data_types is not None else DATA_TYPE_NAMES))
    unknown = [t for t in selected if t not in WEIGHTS]
    if unknown:
        raise ValueError(f"unknown data types: {', '.join(unknown)}")
    counts = split_counts(events_per_hour, selected) if selected else {}
    full = split_counts(events_per_hour, DATA_TYPE_NAMES)
    refs = {t: max(1, counts.get(t, full[t])) for t in DATA_TYPE_NAMES}
    written = dict.fromkeys(selected, 0)
    # Parquet encoding takes about as long as generating, and both release the GIL: write
    # chunk k while making chunk k+1, with at most one write in flight to bound memory.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: Future[dict[int, int]] | None = None
        for k in range(hours):
            hour_ms = start_hour_ms + k * HOUR_MS
            for t in selected:
                for start in range(0, counts[t], CHUNK_ROWS):
                    stop = min(counts[t], start + CHUNK_ROWS)
                    table = rows(t, seed, ai, hour_ms, refs, start, stop)
                    if pending is not None:
                        pending.result()
                    pending = writer.submit(store.append, ai, t, table)
                    written[t] += stop - start
        if pending is not None:
            pending.result()
    return written
