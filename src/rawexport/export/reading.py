"""Reading an hour's rows for its export: (f0..., k0...) batches, and its lines in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from rawexport.export.csvsql import columns, fields_query, literal, sort_keys, source_type
from rawexport.export.parts import feed
from rawexport.export.rangesort import BATCH_ROWS, Collect, Keyed, sort_group
from rawexport.store.events import arrow_schema

# Largest (compressed) dictionary page of a column read as an Arrow dictionary.
DICTIONARY_PAGE_BYTES = 128 << 10


def connect(work: Path, duck_bytes: int, threads: int) -> duckdb.DuckDBPyConnection:
    """A DuckDB of duck_bytes that spills under work."""
    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = {literal(f'{duck_bytes}B')}")
    con.execute(f"SET threads = {int(threads)}")
    con.execute(f"SET temp_directory = {literal(str(work / 'duckdb'))}")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    return con


def _dictionary_columns(pf: pq.ParquetFile, names: list[str]) -> list[str]:
    """Text columns whose every row group is dictionary-encoded with a small dictionary.

    Read as Arrow dictionaries, their values are decoded and quoted once per entry instead
    of once per row; a column whose dictionary overflowed (the writer then falls back to
    plain pages) is read as plain text.
    """
    meta = pf.metadata
    index = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    out = []
    for name in names:
        i = index.get(name)
        if i is None or meta.num_row_groups == 0:
            continue
        chunks = [meta.row_group(g).column(i) for g in range(meta.num_row_groups)]
        if all(
            c.has_dictionary_page
            and c.dictionary_page_offset is not None
            and c.data_page_offset - c.dictionary_page_offset <= DICTIONARY_PAGE_BYTES
            for c in chunks
        ):
            out.append(name)
    return out


def store_batches(
    version: str, name: str, files: Sequence[Path], row_groups: Sequence[int] | None = None
) -> Iterator[pa.RecordBatch]:
    """Batches of (f0..., k0...) read from the store's Parquet files with pyarrow (v2).

    A v2 export writes the stored columns as they are, so no SQL is needed: small-dictionary
    columns stay dictionary-encoded and numbers are formatted by csvline. Columns a file
    lacks are nulls (as DuckDB's union_by_name). row_groups (one file only): read just those.
    """
    fields = list(columns(version, name))
    keys = sort_keys(version, name)
    types = {f.name: f.type for f in arrow_schema(source_type(version, name))}
    wanted = list(dict.fromkeys([*fields, *keys]))
    out_names = [f"f{i}" for i in range(len(fields))] + [f"k{i}" for i in range(len(keys))]
    groups = None if row_groups is None else list(row_groups)
    for path in files:
        pf = pq.ParquetFile(path)
        present = [c for c in wanted if c in pf.schema_arrow.names]
        strings = [c for c in present if pa.types.is_string(types[c])]
        pf = pq.ParquetFile(path, read_dictionary=_dictionary_columns(pf, strings))
        batches = pf.iter_batches(
            batch_size=BATCH_ROWS, row_groups=groups, columns=present, use_threads=False
        )
        for batch in batches:
            n = batch.num_rows
            by_name = {c: batch.column(i) for i, c in enumerate(batch.schema.names)}
            arrays = [by_name.get(c, pa.nulls(n, types[c])) for c in [*fields, *keys]]
            yield pa.RecordBatch.from_arrays(arrays, out_names)


def source(
    con: duckdb.DuckDBPyConnection,
    version: str,
    name: str,
    files: Sequence[Path],
    row_groups: Sequence[int] | None = None,
) -> Iterable[pa.RecordBatch]:
    """Unsorted (f0..., k0...) batches of an export: v2 straight from Parquet, v1 by SQL
    (row_groups: v2 only)."""
    if version == "v2":
        return store_batches(version, name, files, row_groups)
    if row_groups is not None:
        raise ValueError("a v1 export reads whole files")
    reader: Iterable[pa.RecordBatch] = con.sql(
        fields_query(version, name, list(files))
    ).to_arrow_reader(BATCH_ROWS)
    return reader


def sorted_lines(
    con: duckdb.DuckDBPyConnection,
    version: str,
    name: str,
    files: Sequence[Path],
    threads: int = 2,
) -> Iterator[pa.Array]:
    """Every line of files in export order, all held in memory (for hours that fit)."""
    keyed = Keyed(version, name)
    sink = Collect(keyed)
    feed(source(con, version, name, files), sink, workers=max(1, threads))
    yield from sort_group(sink.batches, keyed.keys)
