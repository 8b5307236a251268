import hashlib
import hmac
import json
from collections.abc import Callable
from urllib.parse import urlencode

import pytest

from rawexport.api.auth import Unauthorized, bearer, parse_auth_params, resolve, sign_auth
from tests.conftest import World

UNAUTHORIZED = {"message": "Unauthorized", "errors": []}


def test_sign_auth_is_lowercase_hex_hmac_of_the_documented_string() -> None:
    msg = b"POST\n/auth/token\nproject=nxog09md&ai=0123456789abcdef&tm=1465020309123"
    expected = hmac.new(b"k" * 32, msg, hashlib.sha256).hexdigest()
    got = sign_auth("k" * 32, "nxog09md", "0123456789abcdef", "1465020309123")
    assert got == expected and len(got) == 64 and got == got.lower()


def test_parse_auth_params_from_every_transport() -> None:
    fields = {"project": "p", "ai": "a", "tm": "1", "auth": "x"}
    assert parse_auth_params(fields, b"") == fields
    assert parse_auth_params({}, urlencode(fields).encode()) == fields
    assert parse_auth_params({}, json.dumps(fields).encode()) == fields
    assert parse_auth_params({}, b'{"project":"p","ai":"a","tm":1,"auth":"x"}') == fields
    # body wins over the query; non-scalar JSON values and junk are ignored
    assert parse_auth_params({"tm": "9", "ai": "a"}, b"tm=1")["tm"] == "1"
    assert parse_auth_params({}, b'{"tm":[1],"ai":true}') == {}
    assert parse_auth_params({}, b"{not json") == {}
    assert parse_auth_params({}, b"\xff\xfe") == {}


def _post(w: World, **kw: object) -> tuple[int, object]:
    r = w.client.post("/auth/token", **kw)
    return r.status_code, r.json()


def _ok(status: int, body: object) -> str:
    assert status == 200, body
    assert isinstance(body, dict) and body["status"] == "success"
    code = body["code"]
    assert isinstance(code, str) and len(code) == 64 and code.isalnum()
    return code


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/plain,text/plain", "application/octet-stream", None]
)
def test_raw_body_whatever_the_content_type(world: World, content_type: str | None) -> None:
    headers = {"X-Client-Id": world.key.public_key}
    if content_type:
        headers["Content-Type"] = content_type
    raw = "&".join(f"{k}={v}" for k, v in world.auth_params().items())
    _ok(*_post(world, content=raw.encode(), headers=headers))


def test_query_string_form_and_json_bodies(world: World) -> None:
    h = {"X-Client-Id": world.key.public_key}
    _ok(*_post(world, params=world.auth_params(), headers=h))
    _ok(*_post(world, data=world.auth_params(), headers=h))
    _ok(*_post(world, json=world.auth_params(), headers=h))


def test_without_client_id_the_projects_keys_are_tried(world: World) -> None:
    world.catalog.create_key_pair(world.project.id)  # another key, tried first or not
    code = _ok(*_post(world, params=world.auth_params()))
    assert world.catalog.auth_code_key(code, world.clock.now) == world.key


def test_bad_signature_stale_tm_and_mismatches_are_401(world: World) -> None:
    h = {"X-Client-Id": world.key.public_key}
    now = world.clock.now
    skew = world.settings.auth_skew_seconds * 1000
    bad_auth = {**world.auth_params(), "auth": "0" * 64}
    assert _post(world, params=bad_auth, headers=h) == (401, UNAUTHORIZED)
    assert _post(world, params=world.auth_params(tm=now - skew - 1), headers=h)[0] == 401
    assert _post(world, params=world.auth_params(tm=now + skew + 1), headers=h)[0] == 401
    _ok(*_post(world, params=world.auth_params(tm=now - skew), headers=h))
    for field, value in [("tm", "12x"), ("tm", "١٢٣"), ("project", "zzzzzzzz"), ("ai", "f" * 16)]:
        params = {**world.auth_params(), field: value}
        # re-sign so only the mismatch, not the signature, is wrong
        key = world.key
        params["auth"] = sign_auth(key.private_key, params["project"], params["ai"], params["tm"])
        assert _post(world, params=params, headers=h) == (401, UNAUTHORIZED), field
    missing = {k: v for k, v in world.auth_params().items() if k != "auth"}
    assert _post(world, params=missing, headers=h)[0] == 401
    assert _post(world, params=world.auth_params(), headers={"X-Client-Id": "nope"})[0] == 401
    assert _post(world, content=b"x" * (65 * 1024), headers=h)[0] == 413


def test_a_key_cannot_sign_for_another_project(world: World) -> None:
    other, other_key, _ = world.add_project("other")
    params = world.auth_params(other_key)  # project B's uid/ai ...
    params["auth"] = sign_auth(world.key.private_key, other.uid, other.ai, params["tm"])
    headers = {"X-Client-Id": world.key.public_key}  # ... signed with project A's key
    assert _post(world, params=params, headers=headers) == (401, UNAUTHORIZED)


def test_several_codes_stay_valid_unless_strict(make_world: Callable[..., World]) -> None:
    w = make_world()
    first, second = w.code(), w.code()
    for code in (first, second):
        assert w.catalog.auth_code_key(code, w.clock.now) == w.key
    strict = make_world(strict_auth_codes=True)
    old, new = strict.code(), strict.code()
    assert strict.catalog.auth_code_key(old, strict.clock.now) is None
    assert strict.catalog.auth_code_key(new, strict.clock.now) == strict.key


def test_bearer_forms() -> None:
    assert bearer("abc") == bearer("Token abc") == bearer("Bearer abc") == "abc"
    assert bearer("  token   abc ") == "abc"
    assert bearer("") is None and bearer(None) is None and bearer("   ") is None


def test_resolve_codes_and_tokens(world: World) -> None:
    now = world.clock.now
    code = world.code()
    for header in (code, f"Token {code}", f"Bearer {code}"):
        cred = resolve(world.catalog, header, world.key.public_key, now)
        assert cred.project_id == world.project.id and cred.rate_key == f"k{world.key.id}"
    assert resolve(world.catalog, code, None, now).project_id == world.project.id
    other_key = world.catalog.create_key_pair(world.project.id)
    with pytest.raises(Unauthorized):  # a code belongs to the key that asked for it
        resolve(world.catalog, code, other_key.public_key, now)
    assert resolve(world.catalog, world.token, None, now).project_id == world.project.id
    assert resolve(world.catalog, world.token, other_key.public_key, now).rate_key.startswith("t")
    _, foreign_key, foreign_token = world.add_project("other")
    with pytest.raises(Unauthorized):
        resolve(world.catalog, world.token, foreign_key.public_key, now)
    refused: tuple[str | None, ...] = (None, "", "nope", f"Token {foreign_token[:-1]}")
    for refused_header in refused:
        with pytest.raises(Unauthorized):
            resolve(world.catalog, refused_header, None, now)


def test_a_code_is_valid_for_30_days_on_the_servers_clock(world: World) -> None:
    """Issued and checked on the injected clock: valid a second before 30 days, not at 30
    days, nor a second after."""
    issued = world.clock.now
    code = world.code()
    url = f"/v2/insights/hour/page/{world.project.ai}/2025011008.json"
    thirty_days = 30 * 86_400_000
    for at, valid in (
        (thirty_days - 1000, True),
        (thirty_days, False),
        (thirty_days + 1000, False),
    ):
        world.clock.now = issued + at
        assert (world.catalog.auth_code_key(code, world.clock.now) == world.key) is valid, at
        r = world.client.get(
            url, headers={"X-Client-Id": world.key.public_key, "Authorization": code}
        )
        assert r.status_code == (200 if valid else 401), at


def test_data_calls_accept_every_authorization_form(world: World) -> None:
    url = f"/v2/insights/hour/page/{world.project.ai}/2025011008.json"
    code = world.code()
    pk = world.key.public_key
    for headers in (
        {"X-Client-Id": pk, "Authorization": code},
        {"X-Client-Id": pk, "Authorization": f"Token {code}"},
        {"X-Client-Id": pk, "Authorization": f"Bearer {code}"},
        {"Authorization": code},
        {"Authorization": world.token},
        {"Authorization": f"Bearer {world.token}", "X-Client-Id": pk},
    ):
        assert world.client.get(url, headers=headers).status_code == 200, headers
    for headers in (
        {},
        {"X-Client-Id": pk},
        {"X-Client-Id": pk, "Authorization": "wrong"},
        {"X-Client-Id": "x" * 32, "Authorization": code},
    ):
        r = world.client.get(url, headers=headers)
        assert (r.status_code, r.json()) == (401, UNAUTHORIZED), headers


def test_project_a_credentials_never_read_project_b(world: World) -> None:
    other, other_key, other_token = world.add_project("other")
    own = {"X-Client-Id": world.key.public_key, "Authorization": world.code()}
    for path in (
        f"/v2/insights/hour/page/{other.ai}/2025011008.json",
        f"/v2/insights/day/{other.ai}/20250109.json",
        f"/insights/{other.ai}/20250109.json",
    ):
        for headers in (own, {"Authorization": world.token}):
            r = world.client.get(path, headers=headers)
            assert (r.status_code, r.json()) == (401, UNAUTHORIZED)
        assert world.client.get(path, headers={"Authorization": other_token}).status_code == 200
        mixed = {"X-Client-Id": world.key.public_key, "Authorization": other_token}
        assert world.client.get(path, headers=mixed).status_code == 401
