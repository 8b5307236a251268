"""`rawexport ingest`: import NDJSON, Parquet and GrowingIO CSV(.gz) files into a project."""

from __future__ import annotations

import gc
import gzip
import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rawexport import ingest as conv
from rawexport.ingestor import commit
from rawexport.schema import DATA_TYPES
from rawexport.services import open_services
from rawexport.settings import SettingsError, load_settings
from rawexport.store import arrow_schema
from rawexport.timeutil import now_ms

# An export key's folder: {4hex}_{ai}_{data_type}_v2_{UTC yyyyMMddHHmm}
_TYPES = "|".join(sorted(DATA_TYPES, key=len, reverse=True))
_EXPORT_DIR = re.compile(rf"[0-9a-f]{{4}}_[A-Za-z0-9_-]+?_(?P<t>{_TYPES})_v2_\d{{12}}")


class BadFile(ValueError):
    """A file that cannot be imported; nothing of it is stored."""


def file_kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for suffix, kind in (
        (".ndjson", "ndjson"),
        (".jsonl", "ndjson"),
        (".json", "ndjson"),
        (".parquet", "parquet"),
        (".csv", "csv"),
    ):
        if name.endswith(suffix):
            return kind
    raise BadFile(f"{path}: not .ndjson, .jsonl, .parquet or .csv(.gz)")


def type_of(path: Path, given: str | None) -> str:
    """--data-type, else the type named by an export folder or an event-store path."""
    if given:
        return given
    for part in reversed(path.resolve().parts[:-1]):
        m = _EXPORT_DIR.fullmatch(part)
        if m:
            return m["t"]
        if part in DATA_TYPES:
            return part
    raise BadFile(f"{path}: cannot tell its data type; pass --data-type")


def check_table(data_type: str, table: pa.Table, send_time: int | None) -> pa.Table:
    """A whole table checked like single events: types, lengths, ids, map JSON."""
    t = DATA_TYPES[data_type]
    store_names = {c.name for c in t.store_columns}
    unknown = [n for n in table.column_names if n not in store_names]
    if unknown:
        raise BadFile(f"columns not of {data_type}: {', '.join(unknown)}")
    try:
        table = table.cast(
            pa.schema([arrow_schema(data_type).field(n) for n in table.column_names])
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise BadFile(f"a value does not fit its column: {e}") from None
    for c in t.store_columns:
        if c.name not in table.column_names:
            continue
        col = table.column(c.name)
        if c.type == "string" and c.length is not None and table.num_rows:
            longest = pc.max(pc.utf8_length(col)).as_py()
            if longest is not None and longest > c.length:
                raise BadFile(f"{c.name}: a value is longer than {c.length} characters")
        if c.type == "map":
            for value in col.to_pylist():
                if value is not None and not isinstance(_loads(value), dict):
                    raise BadFile(f"{c.name}: {value[:60]!r} is not a JSON object")
    for name in conv.REQUIRED_IDS[data_type]:
        if name not in table.column_names or table.column(name).null_count:
            raise BadFile(f"{name}: required, missing in some rows")
    if send_time is not None:
        stamp = pa.array([send_time] * table.num_rows, pa.int64())
        if "sendTime" in table.column_names:
            table = table.drop_columns(["sendTime"])
        table = table.append_column("sendTime", stamp)
    elif "sendTime" not in table.column_names or table.column("sendTime").null_count:
        raise BadFile("sendTime: required in every row with --keep-send-time")
    return table


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def read_csv(path: Path, data_type: str) -> pa.Table:
    """A GrowingIO-dialect CSV(.gz): header row, `\\` escapes, empty field = null."""
    types = {
        c.name: arrow_schema(data_type).field(c.name).type
        for c in DATA_TYPES[data_type].store_columns
    }
    try:
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(
                delimiter=",",
                quote_char='"',
                double_quote=False,
                escape_char="\\",
                newlines_in_values=True,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=True, null_values=[""]
            ),
        )
    except (pa.ArrowInvalid, OSError, EOFError) as e:
        raise BadFile(f"{path}: {e}") from None


CHUNK_LINES = 50_000


def convert_lines(
    lines: list[bytes], first: int, data_type: str | None, send_time: int | None
) -> tuple[dict[str, pa.Table], str | None]:
    """Tables of NDJSON lines numbered from `first`, or the first problem found."""
    events: list[Any] = []
    line_of: list[int] = []
    # Many short-lived acyclic dicts: the cyclic GC would cost a third of the time.
    gc.disable()
    try:
        for n, line in enumerate(lines, first):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                return {}, f"line {n} is not valid JSON: {e}"
            if data_type and isinstance(event, dict):
                event.setdefault("type", data_type)
            events.append(event)
            line_of.append(n)
        batch = conv.native(events, send_time)
    finally:
        gc.enable()
    if batch.rejected:
        r = batch.rejected[0]
        return {}, f"line {line_of[r.index]}: {r.field}: {r.reason}"
    return batch.tables, None


def _chunks(path: Path) -> Iterator[tuple[list[bytes], int]]:
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        first = 1
        while lines := list(itertools.islice(f, CHUNK_LINES)):
            yield lines, first
            first += len(lines)


def read_ndjson(path: Path, data_type: str | None, send_time: int | None) -> dict[str, pa.Table]:
    """Native events, one JSON object a line, checked in chunks so memory stays flat.

    (A process pool over the chunks was slower on a busy 2-core machine: pickling the lines
    and tables cost about what it saved.)
    """
    parts: dict[str, list[pa.Table]] = {}
    try:
        for lines, first in _chunks(path):
            tables, problem = convert_lines(lines, first, data_type, send_time)
            if problem:
                raise BadFile(f"{path}: {problem}")
            for t, table in tables.items():
                parts.setdefault(t, []).append(table)
    except (OSError, EOFError) as e:
        raise BadFile(f"{path}: {e}") from None
    return {t: pa.concat_tables(ts) for t, ts in parts.items()}


def load_file(path: Path, data_type: str | None, send_time: int | None) -> dict[str, pa.Table]:
    kind = file_kind(path)
    if kind == "ndjson":
        return read_ndjson(path, data_type, send_time)
    name = type_of(path, data_type)
    if kind == "parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise BadFile(f"{path}: {e}") from None
    else:
        table = read_csv(path, name)
    try:
        return {name: check_table(name, table, send_time)}
    except BadFile as e:
        raise BadFile(f"{path}: {e}") from None


@click.command()
@click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="data directory (env RAWEXPORT_HOME, default ./rawexport-data)",
)
@click.option("--project", "ai", required=True, help="project ai")
@click.option("--data-type", type=click.Choice(list(DATA_TYPES)), default=None)
@click.option(
    "--keep-send-time", is_flag=True, help="keep the files' sendTime (backfill into past hours)"
)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def ingest(
    ctx: click.Context,
    home: Path | None,
    ai: str,
    data_type: str | None,
    keep_send_time: bool,
    files: tuple[Path, ...],
) -> None:
    """Import event files: NDJSON (native events), Parquet or GrowingIO CSV(.gz) parts.

    Without --keep-send-time every row gets now as sendTime, like a live event. With it,
    rows land in their own hours, and hours already exported are exported again.
    """
    # Not importing rawexport.cli: it registers this command, and `python -m rawexport.cli`
    # would import it twice.
    overrides = dict(ctx.obj or {}) | ({"home": home} if home else {})
    try:
        services = open_services(load_settings(overrides))
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    started = time.perf_counter()
    summary: dict[str, Any] = {"ai": ai, "files": 0, "rows": {}}
    try:
        project = services.catalog.project(ai)
        if project is None:
            raise click.ClickException(f"no project with ai {ai!r} in {services.settings.home}")
        for path in files:
            if not path.is_file():
                raise click.ClickException(f"{path}: no such file")
            now = now_ms()
            try:
                tables = load_file(path, data_type, None if keep_send_time else now)
            except BadFile as e:
                raise click.ClickException(str(e)) from None
            commit(services.store, services.catalog, project.id, ai, tables, now)
            summary["files"] += 1
            for t, table in tables.items():
                summary["rows"][t] = summary["rows"].get(t, 0) + table.num_rows
    finally:
        services.close()
    summary["total"] = sum(summary["rows"].values())
    summary["seconds"] = round(time.perf_counter() - started, 3)
    click.echo(json.dumps(summary, ensure_ascii=False))
