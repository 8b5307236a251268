"""The collectors' tests share one site: a project, its key, an ingestor and the app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ingest.test_collectors import Site, make_site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = make_site(tmp_path)
    yield s
    s.ingestor.stop()
    s.client.close()
    s.catalog.close()
