import threading

import pytest

from rawexport.catalog import Catalog, CatalogError, LeaseLost
from rawexport.types import ExportResult, PartInfo
from tests.pg_util import PostgresCluster

H = 3_600_000


def result(n: int = 1) -> ExportResult:
    parts = [PartInfo(i, f"p/part-{i:05d}.csv.gz", 10, 100, "a" * 32, "b" * 64) for i in range(n)]
    return ExportResult("p", "p/_manifest.json", parts, 10 * n, 100 * n)


def test_project_ids_and_uniqueness(catalog: Catalog) -> None:
    p = catalog.create_project("a")
    assert len(p.ai) == 16 and all(ch in "0123456789abcdef" for ch in p.ai)
    assert len(p.uid) == 8 and p.uid.isalnum()
    assert p.export_enabled and p.export_since_ms is not None and p.retention_days == 15
    with pytest.raises(CatalogError):
        catalog.create_project("b", ai=p.ai)
    assert catalog.project(p.ai) == p
    assert catalog.projects() == [p]


def test_set_export_keeps_or_sets_since(catalog: Catalog) -> None:
    p = catalog.create_project("a", export_enabled=False)
    assert p.export_since_ms is None
    p2 = catalog.set_export(p.ai, True, 123 * H)
    assert p2.export_enabled and p2.export_since_ms == 123 * H
    p3 = catalog.set_export(p.ai, False)
    assert not p3.export_enabled and p3.export_since_ms == 123 * H
    with pytest.raises(CatalogError):
        catalog.set_export("nope", True)


def test_credentials(catalog: Catalog) -> None:
    p = catalog.create_project("a")
    kp = catalog.create_key_pair(p.id)
    assert len(kp.public_key) == 32 and len(kp.private_key) == 32
    assert catalog.key_pair(kp.public_key) == kp
    token = catalog.create_api_token(p.id, "ci")
    assert catalog.project_for_token(token) == p.id
    assert catalog.project_for_token(token + "x") is None
    now = p.created_ms
    c1 = catalog.issue_auth_code(kp.id, days=30, strict=False, now=now)
    c2 = catalog.issue_auth_code(kp.id, days=30, strict=False, now=now)
    assert catalog.auth_code_key(c1, now) == kp and catalog.auth_code_key(c2, now) == kp
    c3 = catalog.issue_auth_code(kp.id, days=30, strict=True, now=now)
    assert catalog.auth_code_key(c1, now) is None and catalog.auth_code_key(c3, now) == kp
    assert catalog.auth_code_key(c3, now + 31 * 24 * H) is None


def test_codes_of_one_key_issued_at_once_all_succeed_and_keep_max_live(catalog: Catalog) -> None:
    """Before: on PostgreSQL two requests of one key each revoking the other's older codes
    deadlocked, and /auth/token answered 500 under load."""
    p = catalog.create_project("a")
    kp = catalog.create_key_pair(p.id)
    now = p.created_ms
    codes: list[str] = []
    errors: list[BaseException] = []

    def issue() -> None:
        try:
            for _ in range(15):
                codes.append(
                    catalog.issue_auth_code(kp.id, days=30, strict=False, now=now, max_live=3)
                )
        except BaseException as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=issue) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    assert len(codes) == 120
    assert sum(catalog.auth_code_key(c, now) is not None for c in codes) == 3


def test_plan_is_idempotent_and_claim_leases(catalog: Catalog) -> None:
    p = catalog.create_project("a")
    assert catalog.plan(p.id, "v2", ["page", "visit"], [0, H], 0) == 4
    assert catalog.plan(p.id, "v2", ["page", "visit"], [0, H, 2 * H], 0) == 2
    job = catalog.claim("w1", 10, 1000)
    assert job is not None and job.status == "running" and job.attempts == 1
    assert job.hour_ms == 0
    # a held lease is not claimable; an expired one is
    seen = {job.id}
    for _ in range(5):
        j = catalog.claim("w2", 20, 1000)
        assert j is not None and j.id not in seen
        seen.add(j.id)
    assert catalog.claim("w2", 20, 1000) is None
    again = catalog.claim("w3", 2000, 1000)
    assert again is not None and again.attempts == 2 and again.lease_owner == "w3"
    with pytest.raises(LeaseLost):
        catalog.complete(again, "w1", result(), 2001)
    catalog.complete(again, "w3", result(2), 2001)
    done = catalog.job(again.id)
    assert done.status == "finished" and done.rows == 20
    assert [f.part for f in catalog.files(again.id)] == [0, 1]


def test_a_stale_attempt_cannot_commit_renew_or_fail(catalog: Catalog) -> None:
    """The attempt count is the fencing token: the same owner's older claim is refused."""
    p = catalog.create_project("a")
    catalog.plan(p.id, "v2", ["page"], [0], 0)
    first = catalog.claim("w", 0, 1000)
    assert first is not None and first.attempts == 1
    second = catalog.claim("w", 2000, 1000)  # the lease ran out; the same owner claims again
    assert second is not None and second.id == first.id and second.attempts == 2
    published: list[str] = []
    with pytest.raises(LeaseLost):
        catalog.complete(first, "w", result(), 2001, publish=lambda: published.append("1"))
    assert not catalog.renew_lease(first, "w", 2001, 1000)
    with pytest.raises(LeaseLost):
        catalog.fail(first, "w", "late", retry_at=None, now=2001)
    assert published == [] and catalog.job(first.id).status == "running"

    def broken_publish() -> None:
        raise OSError("manifest write failed")

    with pytest.raises(OSError):  # the manifest is part of the commit: nothing is committed
        catalog.complete(second, "w", result(), 2002, publish=broken_publish)
    assert catalog.job(second.id).status == "running" and catalog.files(second.id) == []
    assert catalog.renew_lease(second, "w", 2002, 1000)
    catalog.complete(second, "w", result(2), 2003, publish=lambda: published.append("2"))
    assert published == ["2"] and catalog.job(second.id).status == "finished"
    assert len(catalog.files(second.id)) == 2


def test_fail_retry_then_error(catalog: Catalog) -> None:
    p = catalog.create_project("a")
    catalog.plan(p.id, "v2", ["page"], [0], 0)
    j = catalog.claim("w", 0, 1000)
    assert j is not None
    assert catalog.fail(j, "w", "boom", retry_at=500, now=1) == "retrying"
    assert catalog.claim("w", 100, 1000) is None
    j = catalog.claim("w", 500, 1000)
    assert j is not None and j.attempts == 2
    assert catalog.fail(j, "w", "dead", retry_at=None, now=501) == "error"
    assert catalog.job(j.id).error == "dead"


def test_a_job_past_max_attempts_is_not_claimed_but_ends(catalog: Catalog) -> None:
    """Attempts that die unrecorded (their lease runs out) are bounded: at max_attempts the
    next claim ends the job in ERROR, with its last recorded failure; claim_id too."""
    p = catalog.create_project("a")
    catalog.plan(p.id, "v2", ["page", "visit"], [0], 0)
    page = catalog.claim("w", 0, 1000, 2)
    assert page is not None and page.data_type == "page"
    catalog.fail(page, "w", "x" * 3990, retry_at=0, now=0)
    page = catalog.claim("w", 0, 1000, 2)  # its second and last attempt, which dies
    assert page is not None and page.data_type == "page" and page.attempts == 2
    visit = catalog.claim("w", 0, 1000, 2)  # its first attempt, which dies too
    assert visit is not None and visit.data_type == "visit" and visit.attempts == 1
    again = catalog.claim("w", 5000, 1000, 2)  # page ends; visit gets its second attempt
    assert again is not None and again.id == visit.id and again.attempts == 2
    ended = catalog.job(page.id)
    assert ended.status == "error" and ended.finished_ms == 5000 and ended.lease_owner is None
    assert ended.error is not None and len(ended.error) == 4000
    assert ended.error.startswith("stopped after 2 attempts, the last without a result (")
    assert "; the last failure recorded: xxx" in ended.error
    assert catalog.claim_id(visit.id, "w", 9000, 1000, 2) is None
    ended = catalog.job(visit.id)
    assert ended.status == "error" and ended.error is not None
    assert ended.error.endswith("or lost its lease)")  # no failure recorded
    assert catalog.claim("w", 9000, 1000) is None  # nothing left


def test_revisions_and_hour_jobs(catalog: Catalog) -> None:
    p = catalog.create_project("a")
    catalog.plan(p.id, "v2", ["page"], [0], 0)
    r2 = catalog.new_revision(p.id, "v2", "page", 0, preview=False, now=1)
    r3 = catalog.new_revision(p.id, "v2", "page", 0, preview=True, now=2)
    assert (r2.revision, r3.revision) == (2, 3)
    jobs = catalog.hour_jobs(p.id, "v2", 0, H)
    assert [j.revision for j in jobs[("page", 0)]] == [2, 1]  # previews excluded, newest first
    assert catalog.claim_id(r3.id, "w", 5, 100) is not None
    assert catalog.claim_id(r3.id, "x", 6, 100) is None


def test_issued_links(catalog: Catalog) -> None:
    p = catalog.create_project("a")
    catalog.save_issued(p.id, "v2/hour/page/2024010100", "fp", ["u1"], 1000, 0)
    assert catalog.issued(p.id, "v2/hour/page/2024010100", "fp", 999) == (["u1"], 1000)
    assert catalog.issued(p.id, "v2/hour/page/2024010100", "fp", 1000) is None
    assert catalog.issued(p.id, "v2/hour/page/2024010100", "other", 10) is None


def test_secret_is_stable(catalog: Catalog) -> None:
    s = catalog.secret("link_signing")
    assert len(s) == 64 and catalog.secret("link_signing") == s


def test_migrations_match_tables_and_downgrade(catalog_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from rawexport.catalog.engine import engine_url

    cfg = Config()
    cfg.set_main_option("script_location", "rawexport.catalog:migrations")
    cfg.set_main_option("sqlalchemy.url", engine_url(catalog_url))
    command.upgrade(cfg, "head")
    command.check(cfg)  # raises when tables.py and the migrations disagree
    command.downgrade(cfg, "base")


def test_claim_is_fair_across_projects(catalog: Catalog) -> None:
    big = catalog.create_project("big")
    small = catalog.create_project("small")
    catalog.plan(big.id, "v2", ["page"], [i * H for i in range(20)], 0)
    catalog.plan(small.id, "v2", ["page"], [0], 5)  # queued later than all of big's
    first = catalog.claim("w1", 10, 1000)
    assert first is not None and first.project_id == big.id
    second = catalog.claim("w2", 10, 1000)  # big has one running: small goes next
    assert second is not None and second.project_id == small.id
    third = catalog.claim("w3", 10, 1000)
    assert third is not None and third.project_id == big.id


def test_concurrent_claimers_take_each_job_exactly_once(catalog_url: str) -> None:
    """Workers on separate connections (as on separate nodes) race for one queue: every
    job is leased once and no claimer waits on another's locked rows (SKIP LOCKED)."""
    setup = Catalog(catalog_url)
    projects = [setup.create_project(f"p{i}") for i in range(3)]
    for p in projects:
        setup.plan(p.id, "v2", ["page", "visit", "action", "vstr"], [h * H for h in range(5)], 0)
    total = 3 * 4 * 5
    catalogs = [Catalog(catalog_url, run_migrations=False) for _ in range(4)]
    start = threading.Barrier(len(catalogs))
    taken: list[list[int]] = [[] for _ in catalogs]

    def work(i: int) -> None:
        start.wait()
        while (job := catalogs[i].claim(f"w{i}", 10, 60_000)) is not None:
            taken[i].append(job.id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(catalogs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [j for mine in taken for j in mine]
    assert len(ids) == total and len(set(ids)) == total
    assert sum(1 for mine in taken if mine) >= 2  # the work was really shared
    for c in [setup, *catalogs]:
        c.close()


def test_postgres_claim_skips_rows_locked_by_another_node(postgres: PostgresCluster) -> None:
    """Row locks are PostgreSQL's (SQLite serializes writers, so it has no such case)."""
    from sqlalchemy import select, text

    from rawexport.catalog.tables import export_jobs

    c = Catalog(postgres.create_database("skip_locked"))
    p = c.create_project("a")
    c.plan(p.id, "v2", ["page", "visit"], [0], 0)
    first = min(j.id for j in c.jobs(p.id))
    with c.engine.connect() as other:  # another node, mid-claim of the first job
        tx = other.begin()
        other.execute(text("SET lock_timeout = '5s'"))
        other.execute(select(export_jobs.c.id).where(export_jobs.c.id == first).with_for_update())
        got: list[object] = []
        claimer = threading.Thread(target=lambda: got.append(c.claim("w", 10, 60_000)))
        claimer.start()
        claimer.join(3)
        assert not claimer.is_alive(), "the claim waited on the locked row"
        tx.rollback()
    job = got[0]
    assert job is not None and getattr(job, "id", None) != first
    c.close()
