"""The OpenAPI 3 document of the HTTP API, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from rawexport.schema import DATA_TYPE_NAMES

STATUSES = ["FINISHED", "RUNNING", "NOT_EXISTS", "ERROR"]
_ERROR = {"$ref": "#/components/schemas/Error"}
_HEADERS = [
    {
        "name": "X-Client-Id",
        "in": "header",
        "required": False,
        "description": "Public key; must own the auth code (or share the token's project).",
        "schema": {"type": "string"},
    }
]


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


_EXPIRE = {
    "name": "expire",
    "in": "query",
    "required": False,
    "description": "Minutes the links stay valid (never past the files' retention).",
    "schema": {"type": "integer", "minimum": 1, "maximum": 10080, "default": 5},
}
_MANIFEST = {
    "name": "manifest",
    "in": "query",
    "required": False,
    "description": "true: add rawexport's fields after GrowingIO's (`manifest`; v1's `errorMsg`)."
    " Without it an answer has exactly GrowingIO's fields.",
    "schema": {"type": "boolean", "default": False},
}
_EXPORT_TYPE = _path("export_type", {"type": "string", "enum": ["hour", "day"]}, "hour or day")
_AI = _path("ai", {"type": "string"}, "project ID; must be the credential's project")
_EXPORT_DATE = _path(
    "export_date",
    {"type": "string", "pattern": r"^\d{8}(\d{2}(\d{2,4})?)?$"},
    "Beijing yyyyMMdd[HH[mm]]; day keeps yyyyMMdd, hour needs and keeps yyyyMMddHH",
)
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}}


def _export_responses(envelope: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{envelope}"}
    return {
        "200": _json(ref, "Status and, when FINISHED, download links"),
        "400": _json(ref, "Bad parameter: status ERROR and errorMsg"),
        "401": _json(_ERROR, "Missing or bad credential, or another project's ai"),
        "429": _json(
            ref,
            "More than rate_queue requests of this credential waiting their turn (requests "
            "over the rate are delayed, not refused): status ERROR and errorMsg",
            headers=_RETRY_AFTER,
        ),
    }


def _download(method: str) -> dict[str, Any]:
    file_headers = {
        "ETag": {"schema": {"type": "string"}, "description": "quoted md5 of the file"},
        "Content-Length": {"schema": {"type": "integer"}},
        "x-amz-meta-md5-hash": {"schema": {"type": "string"}},
        "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
    }
    binary = {"schema": {"type": "string", "format": "binary"}}
    content = {"application/gzip": binary, "application/json": binary}
    return {
        "operationId": f"download_{method}",
        "summary": "Download an export file through a signed link",
        "parameters": [
            _path(
                "prefix",
                {"type": "string"},
                "{hex}_{ai}_{data_type}[_v2]_{UTC yyyyMMddHHmm}, or {hex}_{ai}_{v1 type}_{yyyyMMdd}"
                " for a v1 day; the hex prefix is sized for the base URL",
            ),
            _path("file", {"type": "string"}, "part-NNNNN-{uuid}[-c000].csv.gz or _manifest.json"),
            {"name": "expires", "in": "query", "required": True, "schema": {"type": "string"}},
            {"name": "sign", "in": "query", "required": True, "schema": {"type": "string"}},
            {
                "name": "Range",
                "in": "header",
                "required": False,
                "description": "bytes=a-b, bytes=a- or bytes=-n (206); another unit or several"
                " ranges: the whole file (200)",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "200": {"description": "The file", "headers": file_headers, "content": content},
            "206": {
                "description": "One range of the file",
                "headers": {**file_headers, "Content-Range": {"schema": {"type": "string"}}},
                "content": content,
            },
            "304": {"description": "If-None-Match equals the ETag"},
            "403": _json(_ERROR, "Missing, foreign, tampered or expired signature"),
            "404": _json(_ERROR, "No such file (or no longer retained)"),
            "416": _json(
                _ERROR,
                "Malformed or unsatisfiable byte range",
                headers={"Content-Range": {"schema": {"type": "string"}}},
            ),
        },
    }


def _schemas() -> dict[str, Any]:
    links = {"type": "array", "items": {"type": "string"}}
    common = {
        "status": {"type": "string", "enum": STATUSES},
        "exportType": {"type": "string"},
        "exportDate": {"type": "string"},
        "exportVersion": {"type": "string", "enum": ["v2"]},
        "requestTime": {"type": "string", "description": "Beijing yyyy-MM-dd HH:mm"},
        "errorMsg": {"type": "string"},
    }
    all_links = {
        "type": "object",
        "properties": {t: links for t in DATA_TYPE_NAMES},
        "required": list(DATA_TYPE_NAMES),
    }
    required = ["status", "downloadLinks", "exportType", "exportDate", "exportVersion"]
    manifest_help = (
        "rawexport extension, only with manifest=true and status FINISHED, after the "
        "documented fields: "
        "signed links (same expiry as downloadLinks) to the _manifest.json of every linked "
        "revision, empty hours included (columns, per-part rows, bytes, sha256, md5)"
    )
    manifest = {**links, "description": manifest_help}
    all_manifest = {**all_links, "description": manifest_help + "; keyed by data type"}
    return {
        "Error": {
            "type": "object",
            "properties": {"message": {"type": "string"}, "errors": {"type": "array"}},
            "required": ["message", "errors"],
        },
        "Envelope": {
            "type": "object",
            "properties": {
                **common,
                "downloadLinks": links,
                "dataType": {"type": "string"},
                "manifest": manifest,
            },
            "required": [*required, "dataType", "requestTime", "errorMsg"],
        },
        "AllTypesEnvelope": {
            "type": "object",
            "properties": {**common, "downloadLinks": all_links, "manifest": all_manifest},
            "required": [*required, "requestTime", "errorMsg"],
        },
        "V1Answer": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": STATUSES},
                "downlinks": links,
                "errorMsg": {
                    "type": "string",
                    "description": "with manifest=true, on a bad parameter or ERROR (always in"
                    " the X-Rawexport-Error header, percent-encoded)",
                },
                "manifest": manifest,
            },
            "required": ["status", "downlinks"],
        },
    }


def _collector(operation: str, summary: str, media: str) -> dict[str, Any]:
    accepted = {
        "type": "object",
        "required": ["accepted", "rejected"],
        "properties": {
            "accepted": {"type": "integer"},
            "rejected": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "field": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    }
    return {
        "operationId": operation,
        "summary": summary,
        "parameters": [
            _AI,
            *_HEADERS,
            {"name": "stm", "in": "query", "required": False, "schema": {"type": "string"}},
        ],
        "requestBody": {
            "required": True,
            "content": {media: {"schema": {"type": "string", "format": "binary"}}},
        },
        "responses": {
            "200": _json(accepted, "Stored (durably) the valid events; lists the rejected ones"),
            "400": _json(_ERROR, "Body is not valid JSON, NDJSON or snappy"),
            "403": _json(_ERROR, "Export disabled, or a wrong key"),
            "404": _json(_ERROR, "No such project"),
            "413": _json(_ERROR, "Body or batch over the size limits"),
        },
    }


def _auth_token() -> dict[str, Any]:
    fields = {
        "type": "object",
        "properties": {k: {"type": "string"} for k in ("project", "ai", "tm", "auth")},
    }
    query = [
        {"name": k, "in": "query", "required": False, "schema": {"type": "string"}}
        for k in ("project", "ai", "tm", "auth")
    ]
    return {
        "operationId": "auth_token",
        "summary": "Exchange a signed request for an auth code",
        "description": (
            "`auth` = hex HMAC-SHA256(private key, "
            '"POST\\n/auth/token\\nproject={uid}&ai={ai}&tm={tm}"); `tm` in ms within the '
            "allowed clock skew. Fields come from the query string or the body: raw "
            "`project=..&ai=..&tm=..&auth=..` whatever the Content-Type, form or JSON."
        ),
        "parameters": [*_HEADERS, *query],
        "requestBody": {
            "required": False,
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/x-www-form-urlencoded": {"schema": fields},
                "application/json": {"schema": fields},
            },
        },
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": ["success"]},
                        "code": {"type": "string"},
                    },
                    "required": ["status", "code"],
                },
                "An auth code valid for 30 days",
            ),
            "401": _json(_ERROR, "Bad signature, stale tm, unknown key or project"),
            "413": _json(_ERROR, "Body larger than 64 KiB"),
        },
    }


def document(base_url: str) -> dict[str, Any]:
    """The OpenAPI document; `base_url` is the server download links point at."""
    data_type = _path("data_type", {"type": "string", "enum": list(DATA_TYPE_NAMES)}, "data type")
    secured: list[dict[str, list[str]]] = [{"authCode": []}]
    plain = {"description": "text", "content": {"text/html": {"schema": {"type": "string"}}}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "rawexport",
            "version": "0.1.0",
            "description": "GrowingIO-compatible raw-data export API. Errors outside the "
            'export envelopes are {"message": ..., "errors": []}: 404 for unknown routes, '
            "405 for a wrong method, 503 with Retry-After while a backend (the catalog "
            "database, S3) does not answer, 500 (with a requestId) for a bug.",
        },
        "servers": [{"url": base_url}],
        "paths": {
            "/auth/token": {"post": _auth_token()},
            "/v2/insights/{export_type}/{data_type}/{ai}/{export_date}.json": {
                "get": {
                    "operationId": "v2_one_type",
                    "summary": "Status and links of one data type (E2)",
                    "security": secured,
                    "parameters": [
                        *_HEADERS,
                        _EXPORT_TYPE,
                        data_type,
                        _AI,
                        _EXPORT_DATE,
                        _EXPIRE,
                        _MANIFEST,
                    ],
                    "responses": _export_responses("Envelope"),
                }
            },
            "/v2/insights/{export_type}/{ai}/{export_date}.json": {
                "get": {
                    "operationId": "v2_all_types",
                    "summary": "Status and links of every data type (E3)",
                    "security": secured,
                    "parameters": [*_HEADERS, _EXPORT_TYPE, _AI, _EXPORT_DATE, _EXPIRE, _MANIFEST],
                    "responses": _export_responses("AllTypesEnvelope"),
                }
            },
            "/insights/{ai}/{date}.json": {
                "get": {
                    "operationId": "v1",
                    "summary": "v1: status and links of the 7 v1 types",
                    "security": secured,
                    "parameters": [
                        *_HEADERS,
                        _AI,
                        _path("date", {"type": "string", "pattern": r"^\d{8}(\d{2})?$"}, "v1 date"),
                        _EXPIRE,
                        _MANIFEST,
                    ],
                    "responses": _export_responses("V1Answer"),
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness: the catalog answers",
                    "responses": {
                        "200": _json({"type": "object"}, "Healthy"),
                        "503": _json({"type": "object"}, "The catalog does not answer"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")},
                }
            },
            "/docs": {
                "get": {
                    "operationId": "docs",
                    "summary": "API documentation page",
                    "responses": {"200": plain},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {"200": plain},
                }
            },
            "/v3/projects/{ai}/collect": {
                "post": _collector(
                    "tracker_collect",
                    "GrowingIO tracker events (JSON, snappy, protobuf)",
                    "application/json",
                )
            },
            "/custom/{ai}/events": {
                "post": _collector(
                    "saas_custom_events",
                    "SaaS custom events (JSON array or snappy)",
                    "application/json",
                )
            },
            "/api/v1/projects/{ai}/events": {
                "post": _collector(
                    "native_events",
                    'Native events: NDJSON or a JSON array of {"type": <data_type>, <column>: ...}',
                    "application/octet-stream",
                )
            },
            "/{prefix}/{file}": {"get": _download("get"), "head": _download("head")},
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "authCode": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Auth code or API token: bare, `Token <x>` or `Bearer <x>`",
                }
            },
        },
    }
