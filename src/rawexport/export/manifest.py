"""The `_manifest.json` a committed revision's prefix ends with."""

from __future__ import annotations

import json
from typing import Any

from rawexport.export.csvsql import columns
from rawexport.timeutil import beijing_hour_label
from rawexport.types import ExportResult


def manifest_bytes(
    result: ExportResult,
    *,
    ai: str,
    version: str,
    name: str,
    hour_ms: int,
    revision: int,
    created_ms: int,
) -> bytes:
    """The `_manifest.json` of a committed revision: a pure function of what the catalog
    commits (created_ms is the commit time), so writing it again writes the same bytes."""
    manifest: dict[str, Any] = {
        "ai": ai,
        "version": version,
        "dataType": name,
        "exportHour": beijing_hour_label(hour_ms),
        "hourStartMs": hour_ms,
        "revision": revision,
        "columns": list(columns(version, name)),
        "parts": [
            {
                "key": p.key,
                "part": p.part,
                "rows": p.rows,
                "bytes": p.bytes,
                "sha256": p.sha256,
                "md5": p.md5,
            }
            for p in result.files
        ],
        "rows": result.rows,
        "bytes": result.bytes,
        "createdMs": created_ms,
    }
    return json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
