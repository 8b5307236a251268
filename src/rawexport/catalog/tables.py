"""The catalog's tables (SQLAlchemy Core); migrations/ creates and evolves them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ai", String(32), nullable=False, unique=True),
    Column("uid", String(8), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("export_enabled", Boolean, nullable=False),
    Column("export_since_ms", BigInteger, nullable=True),
    Column("retention_days", Integer, nullable=False),
    Column("v1_enabled", Boolean, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

key_pairs = Table(
    "key_pairs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("public_key", String(64), nullable=False, unique=True),
    Column("private_key", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("display", String(32), nullable=False),
    Column("description", String(200), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

auth_codes = Table(
    "auth_codes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_pair_id", Integer, ForeignKey("key_pairs.id", ondelete="CASCADE"), nullable=False),
    Column("code_sha256", String(64), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

# One row per (project, version, data type, hour, revision): a run is a row.
export_jobs = Table(
    "export_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("version", String(4), nullable=False),
    Column("data_type", String(32), nullable=False),
    Column("hour_ms", BigInteger, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("preview", Boolean, nullable=False, default=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_ms", BigInteger, nullable=True),
    Column("rows", BigInteger, nullable=True),
    Column("bytes", BigInteger, nullable=True),
    Column("prefix", String(200), nullable=True),
    Column("manifest_key", String(300), nullable=True),
    Column("error", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("started_ms", BigInteger, nullable=True),
    Column("finished_ms", BigInteger, nullable=True),
    UniqueConstraint("project_id", "version", "data_type", "hour_ms", "revision"),
    Index("ix_export_jobs_status", "status", "next_attempt_ms"),
    Index("ix_export_jobs_hour", "project_id", "hour_ms"),
)

export_files = Table(
    "export_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("export_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("part", Integer, nullable=False),
    Column("key", String(300), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("md5", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    UniqueConstraint("job_id", "part"),
    Index("ix_export_files_key", "key"),
)

# Links handed out, so a repeated request within their life gets the same links back.
issued_links = Table(
    "issued_links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("scope", String(200), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("links", Text, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_issued_links_scope", "project_id", "scope"),
)

# What the SDK collectors link events by, shared by every node (ingest/joins.py): the page
# show times of (visitor, session, path) and the visitor last seen as a login user, keyed
# by a hash of those; kept a day or two.
sdk_links = Table(
    "sdk_links",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ai", String(32), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("link_key", String(32), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("visitor", String(64), nullable=True),
    Column("session", String(50), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_sdk_links_key", "ai", "kind", "link_key", "at"),
    Index("ix_sdk_links_created", "created_ms"),
)

# Console sign-ins (api/console/sessions.py), shared by every node: a session lives while
# its row does. Sign-out deletes it, and so does revoking the API token it was opened with.
# Only a hash of the session id is stored.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=True),
    Column("token_id", Integer, ForeignKey("api_tokens.id", ondelete="CASCADE"), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Index("ix_console_sessions_expires", "expires_ms"),
    Index("ix_console_sessions_token", "token_id"),
)

# Push delivery (export/delivery.py): where a project's finished hours are copied to.
# credentials: sealed with the settings' secrets key (secretbox.py), never shown again.
destinations = Table(
    "destinations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("format", String(8), nullable=False),
    Column("key_template", String(300), nullable=False),
    Column("config", Text, nullable=False),
    Column("credentials", Text, nullable=True),
    Column("start_hour_ms", BigInteger, nullable=False),
    Column("state", String(8), nullable=False),
    Column("paused_reason", Text, nullable=True),
    Column("failures", Integer, nullable=False, default=0),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    UniqueConstraint("project_id", "name"),
)

# One row per (destination, export revision): delivered at least once, under keys of the
# revision, claimed under a lease like an export job.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "destination_id",
        Integer,
        ForeignKey("destinations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("job_id", Integer, ForeignKey("export_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_ms", BigInteger, nullable=True),
    Column("location", String(500), nullable=True),
    Column("files", Integer, nullable=True),
    Column("rows", BigInteger, nullable=True),
    Column("bytes", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("superseded_by", Integer, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("started_ms", BigInteger, nullable=True),
    Column("delivered_ms", BigInteger, nullable=True),
    UniqueConstraint("destination_id", "job_id"),
    Index("ix_deliveries_status", "status", "next_attempt_ms"),
)

# Webhooks (export/webhooks.py): signed POSTs of a project's events (Standard Webhooks).
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("secret", Text, nullable=False),
    Column("events", Text, nullable=False),
    Column("lag_seconds", Integer, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
)

# Each event sent to a webhook (dedupe_key: one message per event, however often planned)
# and each attempt at sending it.
webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("webhook_id", Integer, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("msg_id", String(40), nullable=False),
    Column("event", String(32), nullable=False),
    Column("dedupe_key", String(200), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("delivered_ms", BigInteger, nullable=True),
    UniqueConstraint("webhook_id", "dedupe_key"),
    Index("ix_webhook_messages_status", "status", "next_attempt_ms"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "message_id",
        Integer,
        ForeignKey("webhook_messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempt", Integer, nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Index("ix_webhook_attempts_message", "message_id"),
)
