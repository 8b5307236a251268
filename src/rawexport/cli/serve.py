"""`rawexport serve`: the API, the scheduler, the compactor, the sweeper and the export workers."""

from __future__ import annotations

import gc
import logging
import resource
import threading
from pathlib import Path
from typing import Any

import click

from rawexport.cli.common import home_option, settings_from, user_errors
from rawexport.logs import setup_logging
from rawexport.settings import Settings

log = logging.getLogger("rawexport.serve")


@click.command()
@home_option
@click.option("--host", default=None, help="bind address (env RAWEXPORT_HOST)")
@click.option("--port", type=int, default=None, help="port (env RAWEXPORT_PORT)")
@click.option("--public-url", default=None, help="base URL of links (env RAWEXPORT_PUBLIC_URL)")
@click.option("--workers", type=int, default=None, help="export jobs run at once")
@click.pass_context
@user_errors
def serve(ctx: click.Context, /, **opts: Any) -> None:
    """Run the API, the scheduler and the export workers."""
    settings = settings_from(ctx, **opts)
    run_server(settings)


def _nr_open() -> int:
    """The most descriptors a Linux process may have (fs.nr_open), else 2**20."""
    try:
        return int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return 1 << 20


def raise_descriptor_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard one (what the machine allows this process);
    returns the soft limit then in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _nr_open() if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("cannot raise the descriptor limit from %d to %d", soft, target)
    return _nr_open() if soft == resource.RLIM_INFINITY else soft


def connection_limit(settings: Settings) -> int:
    """Raise the descriptor limit and size `max_connections` from it (api/limits.py):
    connections alone can then never take the descriptors the rest of serve needs."""
    from rawexport.api.limits import connection_budget

    descriptors = raise_descriptor_limit()
    allowed = connection_budget(descriptors, settings.max_connections)
    if settings.max_connections and allowed < settings.max_connections:
        log.warning(
            "max_connections %d lowered to %d: the descriptor limit is %d",
            settings.max_connections,
            allowed,
            descriptors,
        )
    log.info("serving at most %d connections (descriptor limit %d)", allowed, descriptors)
    return allowed


# Seconds after the start when what the first requests built is frozen too.
REFREEZE_AFTER = (5.0, 30.0)
# Full collections once per this many middle ones (CPython's default: 10).
FULL_EVERY = 1000


def _freeze() -> None:
    gc.collect()
    gc.freeze()


def quiet_collector(refreeze_after: tuple[float, ...] = REFREEZE_AFTER) -> None:
    """Keep the cyclic garbage collector's pauses out of request latency.

    Measured with wrk (64 connections, demo data, SQLite): full collections walk every
    object of the process (hundreds of thousands after the imports and the app) and took
    p99 from ~10 ms to 80-90 ms; with gc off, 10-16 ms. What exists at start lives as long
    as the process, so it is moved out of the collector's sight (gc.freeze), and again a
    few seconds in, for the caches and lazy imports of the first requests. Cycles made
    later are still collected as usual.
    """
    _freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)
    for delay in refreeze_after:
        timer = threading.Timer(delay, _freeze)
        timer.daemon = True
        timer.start()


def run_server(settings: Settings) -> None:
    import uvicorn

    from rawexport.api.limits import guarded_protocol
    from rawexport.node import Node

    setup_logging(settings.log_level)
    node = Node.open(settings)
    node.start()
    try:
        protocol = guarded_protocol(
            connection_limit(settings),
            settings.header_timeout,
            settings.max_header_bytes,
            body_timeout=settings.body_timeout,
            send_timeout=settings.send_timeout,
        )
        quiet_collector()
        uvicorn.run(
            node.app,
            host=settings.host,
            port=settings.port,
            http=protocol,
            timeout_keep_alive=int(max(1, settings.keepalive_timeout)),
            log_level=settings.log_level.lower(),
            access_log=False,  # RequestMetrics writes one JSON line per request instead
            log_config=None,
        )
    finally:
        node.stop()
