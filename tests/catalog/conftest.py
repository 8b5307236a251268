"""The catalog suite runs against both backends: SQLite (a file) and PostgreSQL (a throwaway
cluster on a loopback port, one fresh database per test)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawexport.catalog import Catalog
from tests.pg_util import PostgresCluster

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    with PostgresCluster() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    pg: PostgresCluster = request.getfixturevalue("postgres")
    return pg.create_database(f"catalog_{next(_names)}")


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    c = Catalog(catalog_url)
    yield c
    c.close()
