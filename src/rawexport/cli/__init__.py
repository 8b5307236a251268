"""The `rawexport` command line: a thin face over the catalog, ingest and export stages."""

from rawexport.cli.main import main

__all__ = ["main"]
