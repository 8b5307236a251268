"""Per-address limits count the real client (issue 20, points 6 and 7): behind a trusted
proxy on another host each client has its own address, one a client writes itself is not
believed, and bogus /auth/token attempts with someone's public key do not delay its owner.

The limiters' clock stands still and a delayed request only records its wait: every
request of a test arrives at the same instant, as concurrent clients' would.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.exceptions import StarletteDeprecationWarning
from starlette.types import ASGIApp

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from rawexport.api.app import create_app
from rawexport.api.auth import sign_auth
from rawexport.api.peers import client_address, limit_key, parse_networks
from rawexport.api.ratelimit import AUTH_MAX_DELAY, AUTH_QUEUE, RateLimiter
from rawexport.blobs.local import LocalBlobStore
from rawexport.catalog import Catalog, KeyPair, Project
from rawexport.settings import Settings
from tests.conftest import BASE_URL, NOW

PROXY = "10.0.0.2"  # the proxy, on another host than rawexport
ADMIN = "admin-token-for-the-tests"


@dataclass
class Site:
    app: ASGIApp
    catalog: Catalog
    project: Project
    slept: list[float] = field(default_factory=list)

    def client(self, peer: str, forwarded_for: str | None = None) -> TestClient:
        headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
        return TestClient(self.app, client=(peer, 40000), headers=headers)

    def key(self) -> KeyPair:
        return self.catalog.create_key_pair(self.project.id)

    def params(self, key: KeyPair, good: bool = True) -> dict[str, str]:
        p = self.project
        auth = sign_auth(key.private_key, p.uid, p.ai, str(NOW)) if good else "0" * 64
        return {"project": p.uid, "ai": p.ai, "tm": str(NOW), "auth": auth}

    def ask_code(self, client: TestClient, key: KeyPair, good: bool = True) -> int:
        r = client.post(
            "/auth/token", params=self.params(key, good), headers={"X-Client-Id": key.public_key}
        )
        return int(r.status_code)


def make_site(tmp_path: Path, **settings: Any) -> Site:
    s = Settings(home=tmp_path / "home", public_url=BASE_URL, **settings)
    catalog = Catalog(s.database_url)
    project = catalog.create_project("main")
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    auth_limiter = RateLimiter(
        s.auth_rate_limit, s.auth_rate_burst, AUTH_QUEUE, AUTH_MAX_DELAY, clock=lambda: 0.0
    )
    app = create_app(
        s,
        catalog,
        LocalBlobStore(s.exports_dir),
        clock=lambda: NOW,
        sleep=sleep,
        auth_limiter=auth_limiter,
    )
    return Site(app, catalog, project, slept)


def test_behind_a_trusted_proxy_40_customers_get_codes_at_once(tmp_path: Path) -> None:
    """Before: all had the proxy's address; 10 passed, 20 waited up to 20 s, 10 got 429."""
    site = make_site(tmp_path, trusted_proxies="10.0.0.0/8")
    codes = [site.ask_code(site.client(PROXY, f"198.51.100.{i}"), site.key()) for i in range(1, 41)]
    assert codes == [200] * 40 and site.slept == []


def test_one_client_behind_the_proxy_is_still_limited(tmp_path: Path) -> None:
    site = make_site(tmp_path, trusted_proxies="10.0.0.0/8")
    key = site.key()
    guesser = site.client(PROXY, "203.0.113.66")
    codes = [site.ask_code(guesser, key, good=False) for _ in range(31)]
    assert codes == [401] * 30 + [429]  # 10 at once, 20 waited, then refused
    assert len(site.slept) == 20
    # Addresses the client writes itself sit left of what the proxy appends: ignored.
    spoofed = [
        site.ask_code(site.client(PROXY, f"192.0.2.{i}, 203.0.113.66"), key, good=False)
        for i in range(5)
    ]
    assert spoofed == [429] * 5
    # The same from a proxy that is not trusted: the peer is the client, whatever it says.
    direct = [
        site.ask_code(site.client("192.0.2.200", f"198.51.100.{i}"), key, good=False)
        for i in range(31)
    ]
    assert direct[:30] == [401] * 30 and direct[30] == 429
    # Another client behind the proxy is not affected.
    assert site.ask_code(site.client(PROXY, "198.51.100.9"), key) == 200


def test_wrong_sign_ins_behind_the_proxy_do_not_lock_the_operator_out(tmp_path: Path) -> None:
    """Before: 6 wrong sign-ins from anywhere locked everyone behind the proxy out."""
    site = make_site(tmp_path, trusted_proxies="10.0.0.0/8", admin_token=ADMIN)

    def sign_in(client: TestClient, token: str) -> int:
        page = client.get("/console/signin")
        m = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert m is not None
        r = client.post(
            "/console/signin", data={"csrf": m[1], "token": token}, follow_redirects=False
        )
        return int(r.status_code)

    attacker = site.client(PROXY, "203.0.113.66")
    assert [sign_in(attacker, "wrong-guess") for _ in range(7)] == [401] * 5 + [429] * 2
    assert sign_in(site.client(PROXY, "198.51.100.1"), ADMIN) == 303


def test_bogus_attempts_with_a_public_key_do_not_delay_its_owner(tmp_path: Path) -> None:
    """Before: 30 bogus attempts with the victim's public key (from other addresses) filled
    the key's queue: the owner's correctly signed request waited 20 s or got 429."""
    site = make_site(tmp_path)
    victim = site.key()
    for i in range(1, 31):
        attacker = site.client(f"192.0.2.{i}")
        assert site.ask_code(attacker, victim, good=False) in (401, 429)
    waited = len(site.slept)
    assert site.ask_code(site.client("198.51.100.1"), victim) == 200
    assert len(site.slept) == waited == 0  # nobody waited: one attempt per address
    # Codes are still minted only at the key's rate, from any number of addresses.
    codes = [site.ask_code(site.client(f"198.51.100.{i}"), victim) for i in range(2, 32)]
    assert codes == [200] * 29 + [429] and len(site.slept) == waited + 20


def test_client_address_of_every_header_line_and_ipv6_by_its_64() -> None:
    trusted = parse_networks("10.0.0.0/8")
    # The client's own header line first, the proxy's own line after it: the proxy's wins.
    two_lines = Headers(
        raw=[(b"x-forwarded-for", b"198.51.100.200"), (b"x-forwarded-for", b"203.0.113.5")]
    )
    assert client_address(PROXY, two_lines, trusted) == "203.0.113.5"
    assert client_address("::ffff:10.0.0.2", {"x-forwarded-for": "192.0.2.1"}, trusted) == (
        "192.0.2.1"
    )
    assert limit_key("2001:db8:1:2::5") == limit_key("2001:db8:1:2:ffff::1")
    assert limit_key("2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::5") != limit_key("2001:db8:1:2::5")
    assert limit_key("192.0.2.1") == "192.0.2.1" and limit_key("testclient") == "testclient"
