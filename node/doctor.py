"""`shopnode doctor`: health checks an owner can run and read aloud on the phone.

One line per check: `ok`, `skip` (not set up) or `FAIL` with what to do about it. Nothing is
changed: the database is opened read-only, central and the Bot API are only asked. Exit 0
when nothing failed, 1 otherwise (a configuration that does not load: 2, like every command).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp

from node.backup import START_DELAY, integrity_problems, last_backup
from node.clock import now
from node.config import Config, ConfigError
from node.migrations import SCHEMA_VERSION

NETWORK_TIMEOUT = 10.0  # seconds per question to central or the Bot API
# Room for a backup copy and the write-ahead log to grow, with 500 MB to spare at least.
MIN_FREE_BYTES = 500 * 1024**2
# A Date header has whole seconds; past a minute, receipts and stamps start to disagree
# with the other shops' (and profile edits from a fast clock wait: [sync] max_clock_skew).
MAX_CLOCK_SKEW_SECONDS = 60
OK, SKIP, FAIL = "ok", "skip", "FAIL"


@dataclass(frozen=True)
class Finding:
    """One check's outcome: its status, the check's name and one plain sentence."""

    status: str
    check: str
    text: str

    def line(self) -> str:
        return f"{self.status:<5} {self.check:<9} {self.text}"


def examine(config: Config) -> list[Finding]:
    """Every check, in the order an owner would go through them."""
    findings = [config_finding(config), database_finding(config), disk_finding(config),
                backup_finding(config)]
    return findings + asyncio.run(network_findings(config))


def report(findings: list[Finding]) -> tuple[str, int]:
    """The text to print and the exit code."""
    failed = [f for f in findings if f.status == FAIL]
    lines = [f.line() for f in findings]
    if failed:
        noun = "check" if len(failed) == 1 else "checks"
        lines.append(f"{len(failed)} {noun} failed: do what the FAIL lines say, then run "
                     "`shopnode doctor` again.")  # fmt: skip
    else:
        lines.append("All is well.")
    return "\n".join(lines), 1 if failed else 0


def config_failure(error: ConfigError, path: Path | None) -> str:
    """The doctor's line for a configuration that does not load."""
    where = f"in {path}" if path else "in the SHOPNODE_* environment settings"
    return Finding(FAIL, "config", f"{error}. Fix it {where} (config.example.toml explains "
                                   "every setting), then run `shopnode doctor` again.").line()


def config_finding(config: Config) -> Finding:
    where = str(config.path) if config.path else "no settings file: built-in defaults"
    return Finding(OK, "config", f"{where}; shop {config.node.name!r}, time zone "
                                 f"{config.zone}")  # fmt: skip


def database_finding(config: Config) -> Finding:
    path = config.database_path
    if not path.exists():
        return Finding(FAIL, "database", f"there is no shop database at {path}. If the shop "
                       "has run before, [node] data_dir points at the wrong folder; otherwise "
                       "start it once with `shopnode serve`.")  # fmt: skip
    try:
        # Read-only: the doctor never creates, upgrades or locks the shop's database.
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                return Finding(FAIL, "database", f"{path} was written by a newer shopnode "
                               f"(schema {version}, this one knows {SCHEMA_VERSION}): install "
                               "that newer shopnode again.")  # fmt: skip
            problems = integrity_problems(connection)
            customers = connection.execute("SELECT COUNT(*) FROM customer").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return Finding(FAIL, "database", f"{path} cannot be read ({exc}). Stop the shop and "
                       "restore the newest backup (`shopnode restore FILE`).")  # fmt: skip
    if problems:
        return Finding(FAIL, "database", f"{path} is damaged (the integrity check says: "
                       f"{problems}). Stop the shop and restore the newest backup "
                       "(`shopnode restore FILE`).")  # fmt: skip
    return Finding(OK, "database", f"{path} passes the integrity check "
                   f"({size_text(path.stat().st_size)}, {customers} customers)")  # fmt: skip


def disk_finding(config: Config) -> Finding:
    folder = config.data_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the disk it will be on
    free = shutil.disk_usage(folder).free
    database = config.database_path
    needed = max(MIN_FREE_BYTES, 2 * database.stat().st_size if database.exists() else 0)
    if free < needed:
        return Finding(FAIL, "disk", f"only {size_text(free)} free on the disk of {folder}; "
                       f"free at least {size_text(needed)} (old backups, downloads): when the "
                       "disk is full the shop cannot record sales.")  # fmt: skip
    return Finding(OK, "disk", f"{size_text(free)} free on the disk of {folder}")


def backup_finding(config: Config) -> Finding:
    """The newest backup in `[backup] dir` is no older than two backup intervals."""
    every_hours = config.backup.every_hours
    if not config.scheduled_backups:
        return Finding(SKIP, "backups", "scheduled backups are off: to have them, set [backup] "
                       "dir to a folder, better on another disk, and every_hours above 0")
    directory = config.backup_dir
    newest = last_backup(directory)
    if newest is None:
        return Finding(FAIL, "backups", f"there is no backup in {directory} yet. The node "
                       "takes the first a minute after it starts: if it has been running "
                       "longer, look in its log for 'backup failed'.")  # fmt: skip
    age = (now() - newest.taken_at).total_seconds()
    when = f"is {duration_text(age)} old" if age >= 60 else "was taken just now"
    if age > 2 * every_hours * 3600 + START_DELAY.total_seconds():
        return Finding(FAIL, "backups", f"the newest backup, {newest.path.name}, {when}, but "
                       f"one is due every {every_hours:g} hours: is the node running? If it "
                       "is, look in its log for 'backup failed' (a full disk, a folder it may "
                       "not write to).")  # fmt: skip
    return Finding(OK, "backups", f"the newest, {newest.path.name}, {when} ({directory})")


async def network_findings(config: Config) -> list[Finding]:
    timeout = aiohttp.ClientTimeout(total=NETWORK_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        central, bot = await asyncio.gather(
            central_findings(config, session), bot_finding(config, session)
        )
    return [*central, bot]


async def central_findings(config: Config, session: aiohttp.ClientSession) -> list[Finding]:
    """Central answers and takes this shop's token; this machine's clock agrees with it."""
    url = config.sync.central_url
    if not url:
        off = "sync is off ([sync] central_url is empty)"
        return [Finding(SKIP, "central", off), Finding(SKIP, "clock", off)]
    asked = datetime.now(UTC)
    try:
        async with session.get(url.rstrip("/") + "/sync/v1/status",
                               headers={"Authorization": f"Bearer {config.sync.token}"}) as answer:
            status, date = answer.status, answer.headers.get("Date")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return [
            Finding(FAIL, "central", f"cannot reach {url} ({reason(exc)}). Check this "
                    "computer's internet connection and ask whoever runs central whether it is "
                    "up; the shop keeps working and catches up when it is back."),
            Finding(SKIP, "clock", "not compared: central did not answer"),
        ]  # fmt: skip
    if status == 200:
        found = Finding(OK, "central", f"{url} answers and accepts this shop's token")
    elif status == 401:
        found = Finding(FAIL, "central", f"{url} refuses this shop's token: put the token "
                        "`shopnode central add-store` printed for this shop in [sync] token.")
    elif status == 503:
        found = Finding(FAIL, "central", f"{url} answers but its database is down: tell "
                        "whoever runs central.")  # fmt: skip
    else:
        found = Finding(FAIL, "central", f"{url} answered HTTP {status}, not like central: "
                        "check [sync] central_url.")  # fmt: skip
    return [found, clock_finding(asked, datetime.now(UTC), date)]


def clock_finding(asked: datetime, answered: datetime, date: str | None) -> Finding:
    """This machine's clock against a server's Date header, taken mid-way through the call."""
    try:
        theirs = parsedate_to_datetime(date or "")
    except (TypeError, ValueError):
        return Finding(SKIP, "clock", "not compared: central sent no time")
    ours = asked + (answered - asked) / 2
    skew = (ours - theirs).total_seconds()
    if abs(skew) <= MAX_CLOCK_SKEW_SECONDS:
        return Finding(OK, "clock", f"agrees with central's (within {round(abs(skew))} s)")
    way = "ahead of" if skew > 0 else "behind"
    return Finding(FAIL, "clock", f"this computer's clock is {duration_text(abs(skew))} {way} "
                   "central's: set the right date and time (turn on automatic time).")


async def bot_finding(config: Config, session: aiohttp.ClientSession) -> Finding:
    """Telegram (or `[bot] api_url`) knows the bot token: getMe answers with the bot."""
    from bot.settings import from_config  # where the Bot API's URL is built, once

    if not config.bot.token:
        return Finding(SKIP, "bot", "the Telegram bot is off ([bot] token is empty)")
    settings = from_config(config)
    server = config.bot.api_url or "Telegram"
    try:
        async with session.get(f"{settings.bot_api_base_url}{settings.token}/getMe") as answer:
            status = answer.status
            body = await answer.json(content_type=None) if status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        # Never the exception's text: the URL in it carries the token.
        return Finding(FAIL, "bot", f"cannot reach {server} ({reason(exc)}): check the "
                       "internet connection. The shop keeps working; the bot reconnects by "
                       "itself.")  # fmt: skip
    if status in (401, 404):  # Telegram's answers to an unknown and a malformed token
        return Finding(FAIL, "bot", f"{server} does not accept the bot token: copy it again "
                       "from @BotFather (/mybots, API Token) into [bot] token.")  # fmt: skip
    username = (body.get("result") or {}).get("username") if isinstance(body, dict) else None
    if status != 200 or not username:
        return Finding(FAIL, "bot", f"{server} answered HTTP {status}, not like a Bot API "
                       "server: check [bot] api_url (empty for Telegram's).")  # fmt: skip
    return Finding(OK, "bot", f"{server} accepts the bot token (@{username})")


def reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words and without the URL."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"no answer within {NETWORK_TIMEOUT:.0f} s"
    os_error = getattr(exc, "os_error", None)
    if os_error is not None:
        # "Connection refused" rather than asyncio's "Connect call failed (host, port)".
        text = os.strerror(os_error.errno) if (os_error.errno or 0) > 0 else os_error.strerror
        if text:
            return text.lower()
    return type(exc).__name__


def size_text(size: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def duration_text(seconds: float) -> str:
    """'3 days 2 hours', '2 hours 5 minutes', '4 minutes'."""
    minutes = round(seconds / 60)
    days, hours, minutes = minutes // 1440, minutes // 60 % 24, minutes % 60
    parts = [(days, "day"), (hours, "hour"), (minutes, "minute")]
    shown = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in parts if n][:2]
    return " ".join(shown) or "1 minute"
