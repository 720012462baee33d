"""The `shopnode` command line: one subcommand per job (`shopnode --help` lists them)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import peewee

from node import db, hlc, logs, tokens
from node.backup import NodeRunning, serving
from node.config import Config, ConfigError, find_config_path, load_config
from node.errors import DomainError, NotFound
from node.migrations import SchemaTooNew

if TYPE_CHECKING:  # aiohttp is imported by the commands that serve, not by every command
    from aiohttp import web

log = logging.getLogger("shopnode")

BOT_TOKEN_NAME = "telegram-bot"  # the in-process bot's owner-role token
BOT_STAFF_TOKEN_NAME = "telegram-bot-staff"  # and its staff-role one, for staff users
BOT_TOKENS = {BOT_TOKEN_NAME: "owner", BOT_STAFF_TOKEN_NAME: "staff"}

# aiohttp waits this long for in-flight requests on shutdown before closing them.
SHUTDOWN_TIMEOUT = 10.0


def build_parser() -> argparse.ArgumentParser:
    # --config may stand before or after the subcommand: every parser knows it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="path to shopnode.toml")
    parser = argparse.ArgumentParser(prog="shopnode", parents=[common], description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the shop node")
    serve.set_defaults(run=run_serve)

    token = commands.add_parser("token", parents=[common], help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", parents=[common], help="create a token")
    create.add_argument("--name", required=True)
    create.add_argument("--role", choices=tokens.ROLES, default="owner")
    create.set_defaults(run=run_token_create)
    listing = token_commands.add_parser("list", parents=[common], help="list tokens")
    listing.set_defaults(run=run_token_list)
    revoke = token_commands.add_parser("revoke", parents=[common], help="revoke a token")
    revoke.add_argument("name")
    revoke.set_defaults(run=run_token_revoke)

    central = commands.add_parser("central", parents=[common], help="the central sync node")
    central_commands = central.add_subparsers(dest="central_command", required=True,
                                              metavar="ACTION")  # fmt: skip
    central_serve = central_commands.add_parser("serve", parents=[common], help="run central")
    central_serve.set_defaults(run=run_central_serve)
    add_store = central_commands.add_parser("add-store", parents=[common], help="register a store")
    add_store.add_argument("--name", required=True)
    add_store.set_defaults(run=run_central_add_store)
    central_restore = central_commands.add_parser(
        "restore", parents=[common], help="install a backup of central (stopped); new epoch")
    central_restore.add_argument("file", type=Path, nargs="?")
    central_restore.add_argument("--epoch-only", action="store_true",
                                 help="the database was restored by other means (pg_restore): "
                                      "only take a new epoch")  # fmt: skip
    central_restore.set_defaults(run=run_central_restore)

    verify = commands.add_parser("verify", parents=[common],
                                 help="recompute every total from the facts; check tombstones")
    verify.set_defaults(run=run_verify)

    bot = commands.add_parser("bot", parents=[common], help="run the Telegram bot alone")
    bot.set_defaults(run=run_bot)

    sync = commands.add_parser("sync", parents=[common], help="one sync round now")
    sync.set_defaults(run=run_sync)

    importing = commands.add_parser("import", parents=[common], help="import CSV")
    import_what = importing.add_subparsers(dest="what", required=True, metavar="WHAT")
    import_customers = import_what.add_parser("customers", parents=[common],
                                              help="customers from CSV")  # fmt: skip
    import_customers.add_argument("file", type=Path)
    import_customers.set_defaults(run=run_import_customers)
    exporting = commands.add_parser("export", parents=[common], help="export CSV")
    export_what = exporting.add_subparsers(dest="what", required=True, metavar="WHAT")
    for what in ("customers", "ledger"):
        export = export_what.add_parser(what, parents=[common], help=f"{what} to CSV")
        export.add_argument("file", type=Path)
        export.set_defaults(run=run_export, what=what)

    doctor = commands.add_parser("doctor", parents=[common],
                                 help="health checks in plain words, one line each")
    doctor.set_defaults(run=run_doctor)

    backup = commands.add_parser("backup", parents=[common], help="online backup of the db")
    backup.add_argument("file", type=Path)
    backup.set_defaults(run=run_backup)

    restore = commands.add_parser("restore", parents=[common],
                                  help="install a backup (node stopped); the current db is kept")
    restore.add_argument("file", type=Path)
    restore.set_defaults(run=run_restore)
    return parser


# The commands that open the shop's database hold its lock while they run (shared: several
# may), so that `shopnode restore` cannot swap the file under any of them (node.backup).
USES_DATABASE = {"serve", "token", "import", "export", "verify", "sync", "backup"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    # Everything this program writes (databases, backups, exports) is the shop's business
    # only; the modules also set modes explicitly, this catches what they do not know of.
    os.umask(0o077)
    try:
        config = load_config(getattr(args, "config", None))
        logs.configure(config.log)
        hlc.MAX_DRIFT_MS = config.sync.max_clock_skew_seconds * 1000
        if args.command not in USES_DATABASE:
            return args.run(config, args)
        with serving(config.database_path):  # `shopnode restore` refuses meanwhile
            return args.run(config, args)
    except NodeRunning as exc:
        print(f"shopnode: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        if args.command == "doctor":  # its report goes on, in its own words
            from node.doctor import config_failure

            print(config_failure(exc, find_config_path(getattr(args, "config", None))))
            return 2
        print(f"shopnode: configuration error: {exc}", file=sys.stderr)
        return 2
    except SchemaTooNew as exc:
        print(f"shopnode: {exc}", file=sys.stderr)
        return 1
    except DomainError as exc:
        print(f"shopnode: {exc.detail}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error, peewee.DatabaseError) as exc:
        print(f"shopnode: {exc}", file=sys.stderr)
        return 1


def open_node_database(config: Config):
    return db.open_database(config.database_path)


def run_token_create(config: Config, args: argparse.Namespace) -> int:
    open_node_database(config)
    secret = tokens.create_token(args.name, args.role)
    print(f"created {args.role} token {args.name!r}; it is shown only this once:")
    print(secret)
    return 0


def run_token_list(config: Config, args: argparse.Namespace) -> int:
    open_node_database(config)
    rows = tokens.list_tokens()
    print(f"{'NAME':<24} {'ROLE':<6} {'CREATED':<25} STATUS")
    for row in rows:
        status = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        print(f"{row['name']:<24} {row['role']:<6} {row['created_at']:<25} {status}")
    return 0


def run_token_revoke(config: Config, args: argparse.Namespace) -> int:
    open_node_database(config)
    tokens.revoke_token(args.name)
    print(f"revoked token {args.name!r}")
    return 0


def run_import_customers(config: Config, args: argparse.Namespace) -> int:
    from node import csvio

    open_node_database(config)
    report = csvio.import_customers(args.file, csvio.terminal_progress("importing"))
    for row in report["rejected"]:
        print(f"row {row['row']}: rejected: {row['reason']}", file=sys.stderr)
    print(f"imported {report['imported']}, already present {report['skipped']}, "
          f"rejected {len(report['rejected'])}")  # fmt: skip
    return 1 if report["rejected"] else 0


def run_export(config: Config, args: argparse.Namespace) -> int:
    from node import csvio

    open_node_database(config)
    export = csvio.export_customers if args.what == "customers" else csvio.export_ledger
    count = export(args.file, csvio.terminal_progress("exporting"))
    print(f"exported {count} {'customers' if args.what == 'customers' else 'ledger entries'} "
          f"to {args.file}")  # fmt: skip
    return 0


def run_backup(config: Config, args: argparse.Namespace) -> int:
    """A consistent, checked copy of the live database (node.backup)."""
    from node.backup import write_backup

    write_backup(config.database_path, args.file)
    print(f"backed up {config.database_path} to {args.file}")
    return 0


def run_doctor(config: Config, args: argparse.Namespace) -> int:
    """Plain-language health checks; exit 0 when nothing failed."""
    from node import doctor

    text, code = doctor.report(doctor.examine(config))
    print(text)
    return code


def run_restore(config: Config, args: argparse.Namespace) -> int:
    """Install a backup while the node is stopped; it then syncs as a new origin."""
    from node.restore import RestoreRefused, restore
    from sync.worker import start_over_after_restore

    try:
        print(restore(config.database_path, args.file, start_over_after_restore))
    except RestoreRefused as exc:
        print(f"shopnode: restore refused: {exc}", file=sys.stderr)
        return 2
    return 0


def first_start(config: Config) -> None:
    """Create the database; on the very first start, print an owner token once."""
    open_node_database(config)
    if not tokens.has_tokens():
        secret = tokens.create_token("owner", "owner")
        print("First start: created the owner API token. It is shown only this once;")
        print("keep it safe and send it as 'Authorization: Bearer TOKEN':")
        print(secret, flush=True)
    db.database.close()


# glibc's mallopt() parameter for the most malloc arenas (malloc.h).
M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def fewer_malloc_arenas() -> None:
    """At most MALLOC_ARENAS malloc arenas, as MALLOC_ARENA_MAX=2 would (read only at a
    process's start). glibc gives each thread that allocates its own arena, up to 8 per
    core, and an arena keeps the memory it freed: the reader threads' bursts (a search's
    rows) stayed in the idle node's RSS. Call it before those threads start; a C library
    that is not glibc has no mallopt and is left as it is."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def give_back_freed_memory() -> None:
    """Return the free pages of malloc's heap to the system (glibc's malloc_trim): start-up
    (imports, the schema check, the first queries) frees much that the idle node keeps in
    its RSS otherwise. Not glibc: nothing to do."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def run_serve(config: Config, args: argparse.Namespace) -> int:
    fewer_malloc_arenas()
    from node.api.app import create_app  # the HTTP stack loads only for serve

    first_start(config)
    app = create_app(config, extensions=serve_extensions(config), guard_loop_writes=True)
    on_ready = [lambda url: bot_in_node(config, url, app)] if config.bot.token else []
    asyncio.run(serve_until_signalled(app, config.api.host, config.api.port, on_ready))
    return 0


@contextlib.asynccontextmanager
async def bot_in_node(config: Config, node_url: str, app: web.Application) -> AsyncIterator[None]:
    """The Telegram bot in the node's loop: an API client with a token per role.

    Owners' requests carry the owner-role token `telegram-bot`, staff's the staff-role token
    `telegram-bot-staff`, so the node's staff rules apply to staff using the bot.
    """
    from bot import bot_running, from_config
    from node.api.keys import HEALTH
    from node.writer import write

    # Fresh tokens per run, revoked at exit (and first, if a crash left them behind).
    await write(revoke_bot_tokens)
    try:
        issued = await write(lambda: {name: tokens.create_token(name, role)
                                      for name, role in BOT_TOKENS.items()})  # fmt: skip
        settings = from_config(
            config,
            node_url=node_url,
            node_token=issued[BOT_TOKEN_NAME],
            node_staff_token=issued[BOT_STAFF_TOKEN_NAME],
        )
        async with bot_running(settings) as runner:
            app[HEALTH]["bot"] = bot_health(runner)
            yield
    finally:
        await write(revoke_bot_tokens)


def revoke_bot_tokens() -> None:
    """Revoke the in-process bot's tokens, those that are active."""
    for name in BOT_TOKENS:
        with contextlib.suppress(NotFound):
            tokens.revoke_token(name)


def bot_health(runner: Any) -> Callable[[], dict[str, Any]]:
    """The bot's /healthz report: running or not, and for how long it has not been."""
    last_running = time.monotonic()

    def report() -> dict[str, Any]:
        nonlocal last_running
        now = time.monotonic()
        if runner.state == "running":
            last_running = now
        return {"healthy": runner.state == "running", "state": runner.state,
                "lag_seconds": round(now - last_running, 1)}  # fmt: skip

    return report


def run_bot(config: Config, args: argparse.Namespace) -> int:
    """`shopnode bot`: the Telegram bot alone, against a node's HTTP API."""
    from bot import TokenRejected, from_config, run_bot_forever

    bot_settings = from_config(config)
    if not bot_settings.token:
        raise ConfigError("bot.token: not set; create a bot with BotFather and put its token here")
    if not bot_settings.node_url or not bot_settings.node_token:
        raise ConfigError("bot.node_url/bot.node_token: both must be set for `shopnode bot`")
    try:
        asyncio.run(run_bot_forever(bot_settings))
    except TokenRejected as exc:
        print(f"shopnode: {exc}", file=sys.stderr)
        return 1
    return 0


def serve_extensions(config: Config) -> list[Callable[[web.Application], None]]:
    """Scheduled backups and the sync worker join the node's event loop when configured
    (the bot: bot_in_node)."""
    extensions: list[Callable[[web.Application], None]] = []
    if config.scheduled_backups:
        from node.backup import BackupSchedule, install

        extensions.append(lambda app: install(app, BackupSchedule.from_config(config)))
    if config.sync.central_url:
        from sync import worker

        extensions.append(lambda app: worker.install(
            app, config.sync.central_url, config.sync.token, config.sync.interval_seconds))
    return extensions


def run_sync(config: Config, args: argparse.Namespace) -> int:
    """One round now: push then pull until caught up; exit 1 if central is unreachable."""
    from sync.worker import CentralUnreachable, SyncWorker

    if not config.sync.central_url:
        raise ConfigError("sync.central_url: not set, so there is nothing to sync with")
    open_node_database(config)
    try:
        result = asyncio.run(SyncWorker(config.sync.central_url, config.sync.token).run_round())
    except CentralUnreachable as exc:
        print(f"sync failed: {exc}")
        return 1
    print(result.summary())
    return 0


def run_central_serve(config: Config, args: argparse.Namespace) -> int:
    from node import metrics
    from node.api import access
    from sync.central import create_central_app, running_lock

    if config.metrics.enabled and not config.metrics.token:
        raise ConfigError("metrics.token: central serves /metrics only to this bearer token; "
                          "set one (e.g. `openssl rand -hex 32`) or metrics.enabled = false")
    with running_lock(config.central.database):
        app = create_central_app(config.central.database)
        access.install(app)
        metrics.install_central(app, config.metrics)
        asyncio.run(serve_until_signalled(app, config.central.host, config.central.port))
    return 0


def run_verify(config: Config, args: argparse.Namespace) -> int:
    """Every derived total against its facts, every tombstone against personal data."""
    from node import verify

    if not config.database_path.exists():
        raise OSError(f"no shop database at {config.database_path}")
    open_node_database(config)
    found = verify.differences()
    for line in found:
        print(line)
    counts = verify.summary()
    checked = (f"{counts['customers']} customers, {counts['sales']} sales, {counts['entries']} "
               f"ledger entries, {counts['tombstones']} tombstones; {counts['pending']} synced "
               "changes waiting for a prerequisite")  # fmt: skip
    if found:
        print(f"verify: {len(found)} differences ({checked})")
        return 1
    print(f"verify ok: {checked}")
    return 0


def run_central_restore(config: Config, args: argparse.Namespace) -> int:
    from sync.central import restore

    if args.file is None and not args.epoch_only:
        raise ConfigError("central restore: give the backup FILE (or --epoch-only)")
    print(restore(config, args.file))
    return 0


def run_central_add_store(config: Config, args: argparse.Namespace) -> int:
    from sync.central import add_store

    try:
        print(json.dumps(add_store(config, args.name)))
    except ValueError as exc:
        print(f"shopnode: {exc}", file=sys.stderr)
        return 1
    return 0


async def serve_until_signalled(
    app: web.Application,
    host: str,
    port: int,
    on_ready: list[Callable[[str], contextlib.AbstractAsyncContextManager]] = (),
) -> None:
    """Serve until SIGTERM/SIGINT; `on_ready` contexts get the node's own URL once it listens."""
    from aiohttp import web

    from node.api.server import GuardedSite, connection_limit

    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT, handle_signals=False)
    # Before the ready line: a SIGTERM right after it is a clean stop, not a kill.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    try:
        site = GuardedSite(runner, host, port, connection_limit())
        await site.start()
        bound = site.bound_port  # the real one when port is 0
        give_back_freed_memory()
        log.info("listening on http://%s:%s", host, bound)
        async with contextlib.AsyncExitStack() as stack:
            for start in on_ready:
                await stack.enter_async_context(start(f"http://{local_host(host)}:{bound}"))
            await stop.wait()
            log.info("stopping: finishing in-flight requests")
    finally:
        await runner.cleanup()
    log.info("stopped")


def local_host(host: str) -> str:
    """How this process reaches its own listening socket."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    sys.exit(main())
