"""Operating system, brand and model of a browser's User-Agent (ua-parser, uap-core's rules).

ua-parser's native resolver (ua-parser-rs) parses a string in a few microseconds; the
answers of the last few thousand strings are kept, since a site's visitors share a
handful of browsers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import ua_parser


@dataclass(frozen=True)
class Agent:
    operating_system: str | None
    os_version: str | None
    brand: str | None
    model: str | None
    device_type: str | None  # GrowingIO's deviceType: "1" phone, "0" tablet, else None


def _version(*parts: str | None) -> str | None:
    out = []
    for p in parts:
        if not p:
            break
        out.append(p)
    return ".".join(out) or None


_TABLETS = ("ipad", "tablet", "kindle", "nexus 7", "nexus 9", "nexus 10")
_PHONES = ("iphone", "ipod")


@lru_cache(maxsize=4096)
def parse(user_agent: str) -> Agent:
    """What a User-Agent says of the device; fields the rules cannot tell are None."""
    if not user_agent:
        return Agent(None, None, None, None, None)
    result = ua_parser.parse(user_agent[:1024])
    os = result.os
    device = result.device
    system = os.family if os is not None and os.family != "Other" else None
    version = _version(os.major, os.minor, os.patch) if os is not None else None
    brand = device.brand if device is not None else None
    model = device.model if device is not None else None
    lowered = user_agent.lower()
    kind: str | None = None
    if any(t in lowered for t in _TABLETS):
        kind = "0"
    elif any(p in lowered for p in _PHONES) or "mobile" in lowered:
        kind = "1"
    return Agent(system, version, brand, model, kind)


def warm() -> None:
    """Load ua-parser's rules now (about 0.2 s, once per process) rather than in the first
    browser visit a server takes, which would hold the event loop that long."""
    ua_parser.parse("Mozilla/5.0")
