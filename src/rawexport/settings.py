"""One Settings object, read from defaults, a TOML file, RAWEXPORT_* env vars and flags.

Precedence, lowest first: defaults, the TOML file (`RAWEXPORT_CONFIG`, else
`{home}/rawexport.toml` when it exists), `RAWEXPORT_<NAME>` environment variables, then
flags passed by the CLI. Every setting has a default and one line of help (`SETTINGS_HELP`);
the README lists them all and a test checks it does.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rawexport.errors import UserError


class SettingsError(UserError, ValueError):
    """A setting has a value that cannot be used; the message says which and why."""


def _f(default: Any, help: str, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True)
class Settings:
    home: Path = _f(Path("./rawexport-data"), "data directory: catalog, events, exports")
    host: str = _f("127.0.0.1", "address `rawexport serve` binds")
    port: int = _f(8080, "port `rawexport serve` binds")
    public_url: str = _f("", "base URL put in download links (default http://HOST:PORT)")
    catalog_url: str = _f(
        "", "catalog database: sqlite:///PATH (default HOME/catalog.db) or postgresql://…"
    )
    blobs_url: str = _f(
        "", "export files: file:///DIR (default HOME/exports) or s3://bucket/prefix"
    )
    events_url: str = _f("", "event store: file:///DIR (default HOME/events) or s3://bucket/prefix")
    s3_endpoint_url: str = _f("", "endpoint of an S3-compatible store (default: AWS)")
    s3_region: str = _f("", "S3 region (default: boto3's, from AWS_DEFAULT_REGION or config)")
    dask_address: str = _f(
        "", "Dask scheduler (tcp://host:8786) to run export jobs on; empty: in `serve` itself"
    )
    dask_timeout: float = _f(30.0, "seconds to wait for the Dask scheduler when connecting")
    part_bytes: int = _f(64 * 1024 * 1024, "max bytes of one gzip CSV part (>= 65536)")
    rate_limit: float = _f(2.0, "API requests per second allowed per credential")
    rate_burst: int = _f(2, "requests a credential may send at once before they are delayed")
    rate_queue: int = _f(200, "requests of a credential that may wait their turn; more get 429")
    rate_max_delay: float = _f(120.0, "longest wait (s) of a delayed request; longer gets 429")
    rate_nodes: int = _f(1, "API nodes behind the load balancer: each allows 1/N of the rates")
    workers: int = _f(2, "export jobs run at the same time by `serve`")
    max_connections: int = _f(
        0,
        "open connections `serve` keeps; past it a new one replaces the one that waited on "
        "its client the longest, else is closed at once; 0: all the descriptor limit allows "
        "(3 each, 1024 kept aside, at most 16384); never more than it allows",
    )
    header_timeout: float = _f(10.0, "seconds a request's headers may take to arrive")
    body_timeout: float = _f(
        60.0, "seconds a request's body may take to arrive after its headers; later: 408"
    )
    send_timeout: float = _f(
        60.0, "seconds a response may wait for the client to read; then it is aborted"
    )
    max_header_bytes: int = _f(65536, "largest request line + headers; larger answers 431")
    keepalive_timeout: float = _f(5.0, "seconds an idle kept-alive connection stays open")
    cache_seconds: float = _f(
        1.0, "longest a node reuses credentials, projects and answers read from the catalog"
    )
    grace_seconds: float = _f(5.0, "seconds after an hour closes before its export is planned")
    plan_interval: float = _f(5.0, "seconds between two scheduler passes")
    lease_seconds: float = _f(120.0, "seconds a worker holds a job before others may take it")
    max_attempts: int = _f(5, "tries of an export job before it ends in ERROR")
    retry_base_seconds: float = _f(5.0, "first retry delay; doubles per attempt")
    retry_max_seconds: float = _f(300.0, "cap of the retry delay")
    auth_skew_seconds: int = _f(600, "allowed clock difference of `tm` in /auth/token")
    auth_code_days: int = _f(30, "days an auth code from /auth/token stays valid")
    strict_auth_codes: bool = _f(False, "a new auth code revokes the key's older ones")
    auth_max_live_codes: int = _f(20, "live auth codes per key; a new one revokes the oldest")
    auth_rate_limit: float = _f(
        1.0, "/auth/token attempts per second per client address, and codes per second per key"
    )
    auth_rate_burst: int = _f(10, "/auth/token attempts (codes) at once before they are delayed")
    retention_days: int = _f(15, "default retention of new projects, in days")
    compress_level: int = _f(1, "gzip level of export parts (isal: 0-3)")
    duckdb_memory_limit: str = _f("1GB", "memory budget of one export job (DuckDB gets 40%)")
    duckdb_threads: int = _f(2, "threads of one export job (DuckDB, line building)")
    max_body_bytes: int = _f(16 * 1024 * 1024, "largest request body accepted")
    max_batch_events: int = _f(50_000, "most events one collector request may carry")
    max_batch_values: int = _f(
        2_000_000,
        "most JSON values (objects, arrays, keys, strings, numbers) or protobuf fields one "
        "collector request may carry (50-80 bytes of memory each once parsed)",
    )
    collect_require_key: bool = _f(False, "collectors refuse requests without X-Client-Id")
    trusted_proxies: str = _f(
        "",
        "proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For is believed: "
        "the client address of per-address limits and of visits",
    )
    login_user_attributes: str = _f(
        "vstr", "login-user attributes: vstr (filed as vstr rows) or drop (counted only)"
    )
    group_commit_ms: float = _f(2.0, "ms the ingest writer waits to group batches in one fsync")
    group_commit_rows: int = _f(100_000, "rows that end a group commit early")
    compact_small_bytes: int = _f(32 * 1024 * 1024, "event files below this size get compacted")
    compact_min_files: int = _f(8, "small files that make `serve` compact an hour (open or closed)")
    compact_interval: float = _f(60.0, "seconds between two compaction passes of `serve`")
    sweep_interval: float = _f(600.0, "seconds between two retention sweeps of `serve`")
    log_level: str = _f("info", "log level: debug, info, warning, error")
    admin_token: str = _f(
        "", "operator sign-in of the console (>= 16 characters); empty: no operator", secret=True
    )
    console_session_hours: float = _f(12.0, "hours a console sign-in lasts")
    secrets_key: str = _f(
        "",
        "key sealing destination credentials and webhook secrets at rest (>= 16 characters; "
        "every node of a cluster needs the same); empty: HOME/secrets.key, made on first use",
        secret=True,
    )
    delivery_workers: int = _f(1, "deliveries to destinations run at the same time by `serve`")
    delivery_pause_after: int = _f(
        5, "failed deliveries in a row that pause a destination (it says why)"
    )
    delivery_interval: float = _f(2.0, "seconds between two passes of the delivery planner")
    web_assets: str = _f(
        "", "npm packages the console and /docs serve (default: PREFIX/js/node_modules, `make`'s)"
    )

    def __post_init__(self) -> None:
        if self.secrets_key and len(self.secrets_key) < 16:
            raise SettingsError("secrets_key must have at least 16 characters")
        if self.delivery_workers < 0 or self.delivery_pause_after < 1:
            raise SettingsError("delivery_workers must be >= 0 and delivery_pause_after >= 1")
        if self.part_bytes < 65536:
            raise SettingsError(f"part_bytes must be >= 65536, got {self.part_bytes}")
        if self.rate_limit <= 0 or self.rate_burst < 1:
            raise SettingsError("rate_limit must be > 0 and rate_burst >= 1")
        if self.catalog_url and not self.catalog_url.startswith(
            ("sqlite:///", "postgresql://", "postgres://")
        ):
            raise SettingsError("catalog_url must start with sqlite:/// or postgresql://")
        if self.blobs_url and not self.blobs_url.startswith(("file://", "s3://")):
            raise SettingsError("blobs_url must start with file:// or s3://")
        if self.events_url and not self.events_url.startswith(("file://", "s3://")):
            raise SettingsError("events_url must start with file:// or s3://")
        if self.cache_seconds < 0:
            raise SettingsError(f"cache_seconds must be >= 0, got {self.cache_seconds}")
        if self.rate_queue < 0 or self.rate_max_delay < 0:
            raise SettingsError("rate_queue and rate_max_delay must be >= 0")
        if self.auth_max_live_codes < 1 or self.auth_rate_limit <= 0 or self.auth_rate_burst < 1:
            raise SettingsError(
                "auth_max_live_codes and auth_rate_burst must be >= 1, auth_rate_limit > 0"
            )
        if self.rate_nodes < 1:
            raise SettingsError(f"rate_nodes must be >= 1, got {self.rate_nodes}")
        if self.max_connections < 0 or self.max_header_bytes < 1024:
            raise SettingsError("max_connections must be >= 0 and max_header_bytes >= 1024")
        timeouts = ("header_timeout", "body_timeout", "send_timeout", "keepalive_timeout")
        if not all(0 < getattr(self, name) < math.inf for name in timeouts):
            raise SettingsError(f"{', '.join(timeouts)} must be > 0 (and finite)")
        if self.workers < 1:
            raise SettingsError(f"workers must be >= 1, got {self.workers}")
        if self.max_batch_events < 1 or self.max_batch_values < 1 or self.group_commit_rows < 1:
            raise SettingsError(
                "max_batch_events, max_batch_values and group_commit_rows must be >= 1"
            )
        if self.group_commit_ms < 0 or self.compact_min_files < 2:
            raise SettingsError("group_commit_ms must be >= 0 and compact_min_files >= 2")
        if self.admin_token and len(self.admin_token) < 16:
            raise SettingsError("admin_token must be at least 16 characters")
        if not 0 < self.console_session_hours <= 24 * 30:
            raise SettingsError("console_session_hours must be > 0 and at most 720")
        if self.login_user_attributes not in ("vstr", "drop"):
            raise SettingsError("login_user_attributes must be vstr or drop")
        try:
            for part in self.trusted_proxies.replace(",", " ").split():
                ipaddress.ip_network(part, strict=False)
        except ValueError as e:
            raise SettingsError(f"trusted_proxies: {e}") from None
        if not 0 <= self.compress_level <= 3:
            raise SettingsError(f"compress_level must be 0..3, got {self.compress_level}")

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def database_url(self) -> str:
        return self.catalog_url or f"sqlite:///{self.home.resolve() / 'catalog.db'}"

    @property
    def events_dir(self) -> Path:
        return self.home / "events"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            value = "***" if f.metadata.get("secret") else repr(getattr(self, f.name))
            shown.append(f"{f.name}={value}")
        return f"Settings({', '.join(shown)})"


SETTINGS_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in dataclasses.fields(Settings)}


def _coerce(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(str(raw))
        return str(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"setting {name}: cannot use {raw!r}") from None


def load_settings(
    overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Build Settings from defaults < TOML < env < overrides (None values are ignored)."""
    env = os.environ if environ is None else environ
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    defaults = Settings()
    values: dict[str, Any] = {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(given) - set(fields)
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(sorted(unknown))}")

    home = given.get("home") or env.get("RAWEXPORT_HOME") or defaults.home
    config = env.get("RAWEXPORT_CONFIG")
    config_path = Path(config) if config else Path(home) / "rawexport.toml"
    if config_path.is_file():
        try:
            data = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise SettingsError(f"cannot read {config_path}: {e}") from None
        section = data.get("rawexport", data)
        for key, raw in section.items():
            if key not in fields:
                raise SettingsError(f"{config_path}: unknown setting {key!r}")
            values[key] = raw
    elif config:
        raise SettingsError(f"RAWEXPORT_CONFIG={config}: no such file")
    for name in fields:
        raw = env.get(f"RAWEXPORT_{name.upper()}")
        if raw is not None and raw != "":
            values[name] = raw
    values.update(given)
    coerced = {k: _coerce(k, v, getattr(defaults, k)) for k, v in values.items()}
    return Settings(**coerced)
