"""errorMsg and the console never show the server's file paths (issue 20, point 11): an
export's error names the file, not where the server keeps it."""

from __future__ import annotations

from urllib.parse import unquote

from rawexport.fsutil import hide_paths
from rawexport.timeutil import HOUR_MS
from tests.conftest import CURRENT_HOUR, World

PAST = CURRENT_HOUR - 3 * HOUR_MS  # 2025-01-10 09:00 Beijing
STORED = (
    "OSError: [Errno 28] No space left on device: '/var/lib/rawexport/tmp/a1b2/part-00000.csv.gz'"
)


def test_error_msg_of_v1_and_v2_names_the_file_without_its_path(world: World) -> None:
    """A job's error as recorded before paths were left out of it: hidden when answered."""
    world.fail("page", PAST, STORED)
    world.fail("visit", PAST, STORED, version="v1")
    headers = {"Authorization": world.token}
    ai = world.project.ai
    v2 = world.client.get(f"/v2/insights/hour/page/{ai}/2025011009.json", headers=headers)
    v1 = world.client.get(f"/insights/{ai}/2025011009.json?manifest=true", headers=headers)
    shown = "OSError: [Errno 28] No space left on device: '…/part-00000.csv.gz'"
    assert v2.json()["status"] == "ERROR" and v2.json()["errorMsg"] == shown
    assert v1.json()["status"] == "ERROR" and v1.json()["errorMsg"] == f"visit 2025011009: {shown}"
    # v1's GrowingIO shape has no errorMsg: the header carries the same text
    v1 = world.client.get(f"/insights/{ai}/2025011009.json", headers=headers)
    assert unquote(v1.headers["x-rawexport-error"]) == f"visit 2025011009: {shown}"


def test_hide_paths_keeps_urls_keys_and_the_message() -> None:
    assert hide_paths('IO Error: Cannot open file "/home/u/d/e.parquet": gone') == (
        'IO Error: Cannot open file "…/e.parquet": gone'
    )
    assert hide_paths("file:///srv/rawexport/events/x.parquet and ~/data/y.csv") == (
        "…/x.parquet and …/y.csv"
    )
    kept = "s3://bucket/prefix/k.csv.gz http://h:8080/a/b p/part-0.csv.gz 1/2 rows/s /healthz"
    assert hide_paths(kept) == kept
