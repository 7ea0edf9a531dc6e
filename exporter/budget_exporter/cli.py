"""Command line, in the style of the Prometheus exporters."""

from __future__ import annotations

import argparse
import gc
import logging
import sys

from budget_exporter import __version__
from budget_exporter.config.loader import collector_paused, load_config
from budget_exporter.core.durations import parse_duration
from budget_exporter.core.errors import ConfigError
from budget_exporter.core.logformat import LEVELS, setup_logging
from budget_exporter.runtime.engine import Engine
from budget_exporter.runtime.reload import Reloader, Signals, catch_sighup
from budget_exporter.runtime.storage import Storage
from budget_exporter.web.endpoints import (
    DEFAULT_PORT,
    ExporterServer,
    check_metrics_path,
    parse_listen_address,
)
from budget_exporter.web.transport import Limits
from budget_exporter.web.webconfig import WebConfig, load_web_config

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="budget-exporter",
        description="Prometheus exporter for spend against budgets across clouds, LLM and SaaS APIs.",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default="budget-exporter.yml",
        metavar="PATH",
        help="configuration file (default: %(default)s)",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=f":{DEFAULT_PORT}",
        metavar="HOST:PORT",
        help="address to serve on (default: %(default)s)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        metavar="PATH",
        help="TLS and basic-auth settings (exporter-toolkit format)",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="metrics_path",
        default="/metrics",
        metavar="PATH",
        help="path of the metrics endpoint (default: %(default)s)",
    )
    parser.add_argument(
        "--web.read-timeout",
        dest="read_timeout",
        default="15s",
        metavar="DURATION",
        help="time a whole request may take to arrive, headers and body, that a client may "
        "take to read a whole answer, and that an idle connection stays open "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=int,
        default=512,
        metavar="N",
        help="open connections at most; at the cap the longest-idle one is closed, or a new "
        "one gets 503 when all are busy (default: %(default)s)",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="serve POST/PUT /-/reload (off by default, as in Prometheus; SIGHUP always reloads)",
    )
    parser.add_argument(
        "--storage.path",
        dest="storage_path",
        default=None,
        metavar="PATH",
        help="directory keeping each source's last good figures across restarts "
        "(default: none, a restart polls every source afresh)",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=list(LEVELS),
        help="log level (default: %(default)s)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=["logfmt", "json"],
        help="log format (default: %(default)s)",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration and exit",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="poll every source once, print the metrics and exit (non-zero if a source failed)",
    )
    parser.add_argument("--version", action="version", version=f"budget-exporter {__version__}")
    return parser


def main(argv: list[str] | None = None, sighup: Signals | None = None) -> int:
    """Run the exporter; ``sighup``: the :class:`Signals` whose SIGHUP handler
    ``__main__`` installed before the heavy imports."""
    # Before anything slow: a SIGHUP while the configuration loads is kept, not fatal.
    signals = sighup or catch_sighup()
    # Everything start-up builds from here (the configuration, the saved state, the first
    # snapshot) stays alive: the cyclic collector would only scan it, again and again,
    # until _serve freezes it (a third of a restart with 5,000 sources).  The imports'
    # garbage goes first, while there is little else to scan.
    gc.collect()
    with collector_paused() as collecting:
        return _main(argv, signals, collecting)


def _main(argv: list[str] | None, signals: Signals, collecting: bool) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        print(f"budget-exporter: invalid configuration: {exc}", file=sys.stderr)
        return 1
    if args.config_check:
        print(
            f"{args.config_file}: OK ({len(config.sources)} sources, {len(config.budgets)} budgets)"
        )
        return 0

    if args.once:
        engine = Engine(config, config_path=args.config_file)
        if collecting:
            gc.enable()  # the polls' garbage is no start-up state
        ok = engine.poll_all_once()
        sys.stdout.buffer.write(engine.snapshot.rendered.text)
        sys.stdout.flush()
        return 0 if ok else 1
    storage = Storage(args.storage_path) if args.storage_path else None
    engine = Engine(config, config_path=args.config_file, storage=storage)
    return _serve(engine, args, signals, collecting)


def web_limits(read_timeout: str, max_connections: int) -> Limits:
    """``--web.read-timeout`` (at most 5m) and ``--web.max-connections`` (at least 2)."""
    try:
        seconds = parse_duration(read_timeout).total_seconds()
    except ValueError as exc:
        raise ValueError(f"--web.read-timeout: {exc}") from None
    if seconds > 300:
        raise ValueError("--web.read-timeout: must be at most 5m")
    if max_connections < 2:
        raise ValueError("--web.max-connections: must be at least 2")
    # An answer must be taken within the same time a request may take to arrive.
    return Limits(read_timeout=seconds, write_timeout=seconds, max_connections=max_connections)


def _serve(engine: Engine, args: argparse.Namespace, signals: Signals, collecting: bool) -> int:
    web_config, context = WebConfig(), None
    try:
        parse_listen_address(args.listen_address)
        check_metrics_path(args.metrics_path)
        limits = web_limits(args.read_timeout, args.max_connections)
        if args.web_config_file:
            web_config, context = load_web_config(args.web_config_file)
    except (ValueError, ConfigError) as exc:
        print(f"budget-exporter: {exc}", file=sys.stderr)
        return 1
    signals.catch_stop()
    reloader = Reloader(engine.reload)
    try:
        server = ExporterServer(
            engine,
            args.listen_address,
            web_config,
            context,
            args.metrics_path,
            on_reload=reloader.reload if args.enable_lifecycle else None,
            limits=limits,
        )
    except OSError as exc:
        print(
            f"budget-exporter: cannot listen on {args.listen_address}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1

    # What start-up built (modules, the configuration) stays for good: keep it out of the
    # collector's scans, so that collections under load pause the server only briefly.
    # Not collected first: start-up makes no cyclic garbage worth a full scan of it all
    # (0.13 s with 5,000 sources), and the engine's periodic full collection would take it.
    gc.freeze()
    if collecting:
        gc.enable()  # paused by main since start-up
    engine.start()
    server.start()
    log.info(
        "listening on %s://%s (version %s, %d sources, %d budgets)",
        server.scheme,
        f"{args.listen_address.rpartition(':')[0]}:{server.port}",
        __version__,
        len(engine.config.sources),
        len(engine.config.budgets),
    )
    # The handlers only set flags (and wake this loop through a pipe): the work is done here.
    while not signals.stop_requested:
        if signals.take_reload():
            reloader.reload()
        else:
            signals.wait(1.0 if signals.installed else 0.2)
    signals.stopping()
    log.info("shutting down")
    server.shutdown()
    engine.stop()
    return 0
