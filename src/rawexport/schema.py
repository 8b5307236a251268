"""The 10 v2 data types and the 7 v1 types: ordered columns, types, lengths, v1 names.

This module is the one source of truth for what an export file contains. It imports
nothing of ours. Column lists follow spec/GROWINGIO_EXPORT_SPEC.md §3.1 (v2, frozen at
the latest published version) and §3.2 (v1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnType = Literal["string", "bigint", "double", "map"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    length: int | None = None  # max characters for strings; None = unbounded


def _s(name: str, length: int | None = None) -> Column:
    return Column(name, "string", length)


def _b(name: str) -> Column:
    return Column(name, "bigint")


def _d(name: str) -> Column:
    return Column(name, "double")


def _m(name: str) -> Column:
    return Column(name, "map")


@dataclass(frozen=True)
class DataType:
    name: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def store_columns(self) -> tuple[Column, ...]:
        """Columns kept in the event store: the exported ones plus sendTime when absent.

        Hours are bucketed by sendTime, so the store keeps it for every type, even for
        ads_track_click whose export has no sendTime column.
        """
        if "sendTime" in self.column_names:
            return self.columns
        return (*self.columns, _b("sendTime"))

    @property
    def sort_keys(self) -> tuple[str, ...]:
        """Export row order: visitUserId, sessionId, sendTime (those the type has)."""
        names = {c.name for c in self.store_columns}
        return tuple(k for k in ("visitUserId", "sessionId", "sendTime") if k in names)


_VISIT = DataType(
    "visit",
    (
        _s("visitUserId", 64),
        _s("sessionId", 50),
        _s("accountVersion", 20),
        _s("platform", 64),
        _s("domain", 100),
        _s("page", 1024),
        _s("queryParameters", 1024),
        _s("referrer", 1024),
        _s("language", 10),
        _s("screenHeight", 10),
        _s("screenWidth", 10),
        _b("time"),
        _b("sendTime"),
        _s("ip", 15),
        _s("userAgent", 512),
        _s("operatingSystem", 30),
        _s("operatingSystemVersion", 50),
        _s("clientVersion", 50),
        _s("channel", 40),
        _s("deviceBrand", 20),
        _s("deviceModel", 50),
        _s("deviceType", 50),
        _s("deviceOrientation", 10),
        _d("latitude"),
        _d("longitude"),
        _s("vstRequestId", 16),
        _s("idfa", 40),
        _s("androidId", 16),
        _s("IMEI", 16),
    ),
)

_PAGE = DataType(
    "page",
    (
        _s("visitUserId", 64),
        _s("sessionId", 50),
        _s("platform", 20),
        _s("domain", 100),
        _s("page", 1024),
        _s("queryParameters", 1024),
        _s("referrer", 1024),
        _s("referrerPage", 1024),
        _s("title", 1024),
        _b("time"),
        _b("sendTime"),
        _s("deviceOrientation", 10),
        _s("loginUserId", 200),
        _s("pageGroup", 200),
        _m("appVariable"),
        *(_s(f"customerAttributes{i}", 200) for i in range(2, 11)),
        *(_s(f"pageAttributes{i}", 200) for i in range(1, 11)),
        _s("pageRequestId", 23),
        _s("vstRequestId", 16),
    ),
)

_ACTION = DataType(
    "action",
    (
        _s("visitUserId", 64),
        _s("sessionId", 50),
        _s("requestType", 10),
        _s("domain", 100),
        _s("page", 1024),
        _b("sendTime"),
        _b("time"),
        _s("href", 1024),
        _s("requestValue", 1024),
        _b("index"),
        _s("info", 200),
        _s("pageRequestId", 23),
        _s("actionRequestId", 30),
    ),
)

_ACTION_TAG = DataType(
    "action_tag",
    (_b("sendTime"), _s("actionRequestId", 30), _s("ruleId", 12)),
)

_CUSTOM_EVENT = DataType(
    "custom_event",
    (
        _s("visitUserId", 64),
        _s("sessionId", 50),
        _b("time"),
        _b("sendTime"),
        _b("pageTime"),
        _s("domain", 100),
        _s("page", 1024),
        _s("queryParameters", 1024),
        _s("eventName", 50),
        _d("eventNumber"),
        _m("eventVariable"),
        _s("loginUserId", 200),
        _s("pageRequestId", 23),
    ),
)

_PVAR = DataType(
    "pvar",
    (
        _s("visitUserId", 64),
        _s("sessionId", 50),
        _b("time"),
        _b("sendTime"),
        _b("pageTime"),
        _s("domain", 100),
        _s("page", 1024),
        _m("pageVariable"),
        _s("pageRequestId", 23),
    ),
)

_EVAR = DataType(
    "evar",
    (
        _s("visitUserId", 64),
        _s("sessionId", 50),
        _b("time"),
        _b("sendTime"),
        _s("domain", 100),
        _m("conversionVariable"),
    ),
)

_VSTR = DataType(
    "vstr",
    (
        _s("visitUserId", 64),
        _s("sessionId", 50),
        _b("time"),
        _b("sendTime"),
        _m("visitorVariable"),
    ),
)

_ADS_COMMON_IDS = (
    _s("idfa", 40),
    _s("imei", 40),
    _s("uuid", 40),
    _s("androidId", 40),
    _s("ip", 15),
    _s("userAgent", 512),
    _s("platform", 20),
    _s("operatingSystemVersion", 50),
)
_ADS_LINK = (
    _s("linkId", 20),
    _s("campaignId", 20),
    _s("channelId", 20),
    _s("linkName", 60),
    _s("campaignName", 60),
    _s("channelName", 60),
    _m("adsVariable"),
    _s("OAID", 64),
)

_ADS_TRACK_ACTIVATION = DataType(
    "ads_track_activation",
    (_s("visitUserId", 64), *_ADS_COMMON_IDS, _b("sendTime"), *_ADS_LINK),
)

_ADS_TRACK_CLICK = DataType(
    "ads_track_click",
    (*_ADS_COMMON_IDS, _b("eventTime"), *_ADS_LINK, _s("clickUrl")),
)

DATA_TYPES: dict[str, DataType] = {
    t.name: t
    for t in (
        _VISIT,
        _PAGE,
        _ACTION,
        _ACTION_TAG,
        _CUSTOM_EVENT,
        _PVAR,
        _EVAR,
        _VSTR,
        _ADS_TRACK_ACTIVATION,
        _ADS_TRACK_CLICK,
    )
}
DATA_TYPE_NAMES: tuple[str, ...] = tuple(DATA_TYPES)


# ---- v1 -----------------------------------------------------------------------------


@dataclass(frozen=True)
class V1Column:
    """A v1 column and how to compute it from the v2 row (a DuckDB SQL expression)."""

    name: str
    type: ColumnType
    expr: str


@dataclass(frozen=True)
class V1Type:
    name: str
    source: str  # the v2 data type its rows come from
    columns: tuple[V1Column, ...]
    sort_keys: tuple[str, ...]  # v2 column names

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _v(name: str, type_: ColumnType = "string", expr: str | None = None) -> V1Column:
    return V1Column(name, type_, expr if expr is not None else f'"{name}"')


_NULL = "CAST(NULL AS VARCHAR)"

_V1_VISIT = V1Type(
    "visit",
    "visit",
    (
        _v("userId", expr='"visitUserId"'),
        _v("sessionId"),
        _v("sendTime", "bigint"),
        _v("eventTime", "bigint", '"time"'),
        _v("eventType", expr="'vst'"),
        _v("ip"),
        _v("countryName", expr=_NULL),
        _v("region", expr=_NULL),
        _v("city", expr=_NULL),
        _v("domain"),
        _v("path", expr='"page"'),
        _v("refer", expr='"referrer"'),
        _v("userAgent"),
        _v("appVersion", expr='"clientVersion"'),
        _v("model", expr='"deviceModel"'),
        _v("manufacturer", expr='"deviceBrand"'),
        _v("channel"),
        _v("language"),
        _v("osVersion", expr='"operatingSystemVersion"'),
        _v("resolution", expr='"screenWidth" || \'x\' || "screenHeight"'),
        _v("platform"),
        _v("id", expr='"vstRequestId"'),
        _v("query", expr='"queryParameters"'),
        _v("lat", "double", '"latitude"'),
        _v("lng", "double", '"longitude"'),
    ),
    ("visitUserId", "sessionId", "sendTime"),
)

_V1_PAGE = V1Type(
    "page",
    "page",
    (
        _v("userId", expr='"visitUserId"'),
        _v("sessionId"),
        _v("sendTime", "bigint"),
        _v("eventTime", "bigint", '"time"'),
        _v("eventType", expr="'page'"),
        _v("domain"),
        _v("path", expr='"page"'),
        _v("query", expr='"queryParameters"'),
        _v("refer", expr='"referrer"'),
        _v("title"),
        _v("platform"),
        _v("cs1", expr='"loginUserId"'),
        *(_v(f"cs{i}", expr=f'"customerAttributes{i}"') for i in range(2, 11)),
        _v("id", expr='"pageRequestId"'),
        _v("visit_id", expr='"vstRequestId"'),
        _v("pagegroup", expr='"pageGroup"'),
        *(_v(f"ps{i}", expr=f'"pageAttributes{i}"') for i in range(1, 11)),
    ),
    ("visitUserId", "sessionId", "sendTime"),
)

_V1_ACTION = V1Type(
    "action",
    "action",
    (
        _v("userId", expr='"visitUserId"'),
        _v("sessionId"),
        _v("sendTime", "bigint"),
        _v("eventTime", "bigint", '"time"'),
        _v("eventType", expr='"requestType"'),
        _v("eventValue", expr='"requestValue"'),
        _v("domain"),
        _v("path", expr='"page"'),
        _v("href"),
        _v("page_id", expr='"pageRequestId"'),
        _v("action_id", expr='"actionRequestId"'),
        _v("index", "bigint"),
        _v("info"),
    ),
    ("visitUserId", "sessionId", "sendTime"),
)

_V1_ACTION_TAG = V1Type(
    "action_tag",
    "action_tag",
    (
        _v("sendTime", "bigint"),
        _v("action_id", expr='"actionRequestId"'),
        _v("rule_id", expr='"ruleId"'),
    ),
    ("sendTime",),
)

# custom_attr.attribute is a JSON object string: the fixed `_` fields plus the event's
# own variables (spec §3.2).
_CUSTOM_ATTR_JSON = (
    "CAST(json_merge_patch(json_object("
    "'_userId', \"visitUserId\", '_sessionId', \"sessionId\", '_eventTime', \"time\", "
    "'_domain', \"domain\", '_path', \"page\", '_query', \"queryParameters\", "
    "'_cs1', \"loginUserId\"), coalesce(CAST(\"eventVariable\" AS JSON), '{}')) AS VARCHAR)"
)

_V1_CUSTOM_ATTR = V1Type(
    "custom_attr",
    "custom_event",
    (
        _v("sendTime", "bigint"),
        _v("eventname", expr='"eventName"'),
        _v("attribute", expr=_CUSTOM_ATTR_JSON),
    ),
    ("visitUserId", "sessionId", "sendTime"),
)

_V1_ADS_LINK = (
    _v("link_id", expr='"linkId"'),
    _v("campaign_id", expr='"campaignId"'),
    _v("channel_id", expr='"channelId"'),
    _v("link_name", expr='"linkName"'),
    _v("campaign_name", expr='"campaignName"'),
    _v("channel_name", expr='"channelName"'),
)
_V1_ADS_IDS = (
    _v("idfa"),
    _v("imei"),
    _v("uuid"),
    _v("androidid", expr='"androidId"'),
    _v("ip"),
    _v("useragent", expr='"userAgent"'),
    _v("platform"),
)

_V1_ADS_TRACK_ACTIVATION = V1Type(
    "ads_track_activation",
    "ads_track_activation",
    (
        _v("userId", expr='"visitUserId"'),
        *_V1_ADS_IDS,
        _v("osversion", expr='"operatingSystemVersion"'),
        _v("sendTime", "bigint"),
        *_V1_ADS_LINK,
    ),
    ("visitUserId", "sendTime"),
)

# The v1 click table has no osversion column (the v2 mapping table implies one; we follow
# the v1 table itself, spec §3.2).
_V1_ADS_TRACK_CLICK = V1Type(
    "ads_track_click",
    "ads_track_click",
    (*_V1_ADS_IDS, _v("eventTime", "bigint"), *_V1_ADS_LINK),
    ("sendTime",),
)

V1_TYPES: dict[str, V1Type] = {
    t.name: t
    for t in (
        _V1_VISIT,
        _V1_PAGE,
        _V1_ACTION,
        _V1_ACTION_TAG,
        _V1_CUSTOM_ATTR,
        _V1_ADS_TRACK_ACTIVATION,
        _V1_ADS_TRACK_CLICK,
    )
}
V1_TYPE_NAMES: tuple[str, ...] = tuple(V1_TYPES)


def export_columns(version: str, name: str) -> tuple[str, ...]:
    """The header of an export file of (version, type)."""
    if version == "v2":
        return DATA_TYPES[name].column_names
    return V1_TYPES[name].column_names


def types_for(version: str) -> tuple[str, ...]:
    return DATA_TYPE_NAMES if version == "v2" else V1_TYPE_NAMES
