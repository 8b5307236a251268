"""Schemathesis over the served OpenAPI document: no generated request gets a 5xx."""

from typing import Any
from urllib.parse import parse_qs, urlsplit

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from rawexport.timeutil import HOUR_MS
from tests.conftest import CURRENT_HOUR, World

EXAMPLES = 40
CONTENT_TYPES = (
    "application/json",
    "application/gzip",
    "text/html; charset=utf-8",
    "text/plain; version=0.0.4; charset=utf-8",
)


def test_no_generated_request_gets_a_server_error(world: World) -> None:
    world.finish("page", CURRENT_HOUR - 3 * HOUR_MS, [b"x" * 100])
    link = world.client.get(
        f"/v2/insights/hour/page/{world.project.ai}/2025011009.json?expire=10080",
        headers={"Authorization": world.token},
    ).json()["downloadLinks"][0]
    prefix, file = urlsplit(link).path.strip("/").split("/")
    signature = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    real = {"ai": world.project.ai, "prefix": prefix, "file": file}
    # Hypothesis leans to the first choices and to False: make those the valid ones.
    credentials: list[dict[str, str]] = [
        {"Authorization": world.token},
        world.headers(),
        {},
        {"Authorization": "junk", "X-Client-Id": world.key.public_key},
    ]
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.client.app)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) == 12  # every route but /openapi.json itself
    for operation in operations:
        raw = operation.definition.raw
        modes = [GenerationMode.POSITIVE]
        if raw.get("parameters") or raw.get("requestBody"):
            modes.append(GenerationMode.NEGATIVE)  # nothing to break in a parameterless call
        for mode in modes:

            @given(
                case=operation.as_strategy(generation_mode=mode),
                auth=st.sampled_from(credentials),
                generated=st.booleans(),
                date=st.sampled_from(["2025011009", "20250109", "202501100930", None]),
            )
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any, auth: dict[str, str], generated: bool, date: str | None) -> None:
                params = case.path_parameters or {}
                if not generated:
                    params.update({k: v for k, v in real.items() if k in params})
                    if "prefix" in params:
                        case.query = {**(case.query or {}), **signature}
                for name in ("export_date", "date"):
                    if date and not generated and name in params:
                        params[name] = date
                headers = dict(case.headers or {})
                if auth:
                    headers = {k: v for k, v in headers.items() if k.lower() != "x-client-id"}
                response = case.call(headers={**headers, **auth})
                assert response.status_code < 500, (case.as_curl_command(), response.text)
                if response.status_code not in (204, 304) and case.method != "HEAD":
                    assert response.headers["content-type"][0] in CONTENT_TYPES

            world.limiter._excess.clear()
            check()
