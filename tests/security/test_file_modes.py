"""Secrets at rest (issue 13, point 10): the catalog (private keys, the link-signing
secret) and demo-credentials.json are the owner's alone, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rawexport.cli.demo import CREDENTIALS_FILE
from rawexport.fsutil import write_private
from rawexport.node import open_services
from rawexport.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_and_catalog_are_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        home = tmp_path / "home"
        services = open_services(Settings(home=home))
        try:
            p = services.catalog.create_project("secret")
            services.catalog.create_key_pair(p.id)  # a write: the WAL file exists now
            assert mode(home) == 0o700
            db = home / "catalog.db"
            assert mode(db) == 0o600
            for side in (home / "catalog.db-wal", home / "catalog.db-shm"):
                if side.exists():
                    assert mode(side) == 0o600, side
        finally:
            services.close()
    finally:
        os.umask(old)


def test_credentials_files_are_written_private(tmp_path: Path) -> None:
    target = tmp_path / CREDENTIALS_FILE
    target.write_text("old")
    target.chmod(0o644)  # an existing file readable by all is replaced by a private one
    old = os.umask(0o000)
    try:
        write_private(target, b'{"private_key": "x"}\n')
    finally:
        os.umask(old)
    assert mode(target) == 0o600 and target.read_bytes() == b'{"private_key": "x"}\n'
