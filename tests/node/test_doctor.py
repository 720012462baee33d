"""`shopnode doctor` as an owner runs it: real processes (a serving node, central, a Bot API
server), one plain line per check, exit 0 only when all is well."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from node.backup import take_backup
from node.doctor import clock_finding
from tests.bot.fake_telegram import FakeBotAPI
from tests.processes import Central, NodeProcess, shopnode, start_central, start_node
from tests.sync.conftest import register_store

BOT_TOKEN = "424242:doctor-test-token-never-printed"


@dataclass
class Shop:
    """A node serving with sync to central and the bot on a Bot API server, and its env."""

    node: NodeProcess
    central: Central
    telegram: FakeBotAPI
    env: dict[str, str]

    async def doctor(self, **env: str) -> tuple[int, dict[str, tuple[str, str]], str]:
        """Run `shopnode doctor`; its exit code, {check: (status, text)} and its output."""
        done = await asyncio.to_thread(shopnode, "doctor", env={**self.env, **env})
        assert done.stderr == "" or "Traceback" not in done.stderr, done.stderr
        lines = done.stdout.splitlines()
        checks = {}
        for line in lines[:-1]:
            status, check, text = line.split(maxsplit=2)
            checks[check] = (status, text)
        return done.returncode, checks, done.stdout


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    telegram = FakeBotAPI(BOT_TOKEN)
    await telegram.start()
    central_env = {"SHOPNODE_CENTRAL_DATABASE": f"sqlite:///{tmp_path / 'central.db'}",
                   "SHOPNODE_CENTRAL_PORT": "0"}  # fmt: skip
    central = await asyncio.to_thread(start_central, central_env, tmp_path / "central.log")
    try:
        store = await asyncio.to_thread(register_store, central, "Corner Store")
        env = {
            "SHOPNODE_NODE_NAME": "Corner Store",
            "SHOPNODE_NODE_DATA_DIR": str(tmp_path / "shop"),
            "SHOPNODE_NODE_TIMEZONE": "Asia/Karachi",
            "SHOPNODE_API_PORT": "0",
            "SHOPNODE_SYNC_CENTRAL_URL": central.url,
            "SHOPNODE_SYNC_TOKEN": store["token"],
            "SHOPNODE_BOT_TOKEN": BOT_TOKEN,
            "SHOPNODE_BOT_API_URL": telegram.url,
            # A backup every 3.6 s, the first 3.6 s after start.
            "SHOPNODE_BACKUP_EVERY_HOURS": "0.001",
            "SHOPNODE_BACKUP_DIR": str(tmp_path / "shop" / "backups"),
        }
        node = await asyncio.to_thread(start_node, env, tmp_path / "node.log")
        # The shop has one to check at once: the schedule's first, taken here as the schedule
        # takes it (same function, same name) instead of waiting 3.6 s for it.
        await asyncio.to_thread(take_backup, tmp_path / "shop" / "shop.db",
                                tmp_path / "shop" / "backups", 14)  # fmt: skip
        yield Shop(node, central, telegram, env)
        node.stop(signal.SIGKILL)
    finally:
        central.stop(signal.SIGKILL)
        await telegram.close()


async def test_a_healthy_shop_passes_every_check(shop: Shop):
    code, checks, output = await shop.doctor()
    assert code == 0, output
    assert {check: status for check, (status, _) in checks.items()} == {
        "config": "ok", "database": "ok", "disk": "ok", "backups": "ok", "central": "ok",
        "clock": "ok", "bot": "ok"}  # fmt: skip
    assert output.splitlines()[-1] == "All is well."
    assert "'Corner Store', time zone Asia/Karachi" in checks["config"][1]
    assert "passes the integrity check" in checks["database"][1]
    assert checks["bot"][1].endswith("accepts the bot token (@shop_test_bot)")
    assert BOT_TOKEN not in output


async def test_a_stopped_central_is_one_line_saying_what_to_do(shop: Shop):
    shop.central.stop()
    code, checks, output = await shop.doctor()
    assert code == 1
    status, text = checks["central"]
    assert status == "FAIL" and text.startswith(f"cannot reach {shop.central.url}")
    assert "internet connection" in text
    assert checks["clock"][0] == "skip"
    assert [c for c, (s, _) in checks.items() if s == "FAIL"] == ["central"]
    assert output.splitlines()[-1].startswith("1 check failed")


async def test_a_token_central_does_not_know_is_named(shop: Shop):
    code, checks, _ = await shop.doctor(SHOPNODE_SYNC_TOKEN="st_not-a-store-token")
    assert code == 1
    assert checks["central"][0] == "FAIL" and "[sync] token" in checks["central"][1]
    assert checks["clock"][0] == "ok"  # central still said what time it is


async def test_a_bad_bot_token_is_named_and_never_shown(shop: Shop):
    wrong = "424242:a-wrong-token-also-never-printed"
    code, checks, output = await shop.doctor(SHOPNODE_BOT_TOKEN=wrong)
    assert code == 1
    status, text = checks["bot"]
    assert status == "FAIL" and "does not accept the bot token" in text and "@BotFather" in text
    assert wrong not in output and BOT_TOKEN not in output


async def test_a_broken_config_is_one_line_naming_the_key_and_exit_2(shop: Shop, tmp_path):
    config = tmp_path / "shopnode.toml"
    config.write_text('[node]\ncurrency = "RUPEES"\n')
    done = await asyncio.to_thread(shopnode, "doctor", "--config", str(config), env=shop.env)
    assert done.returncode == 2
    [line] = done.stdout.splitlines()
    assert line.startswith("FAIL  config    node.currency: unknown ISO 4217 currency 'RUPEES'")
    assert f"Fix it in {config}" in line
    assert "Traceback" not in done.stdout + done.stderr


async def test_a_damaged_database_says_restore_the_newest_backup(shop: Shop):
    shop.node.stop()
    database = Path(shop.env["SHOPNODE_NODE_DATA_DIR"]) / "shop.db"
    with database.open("r+b") as file:  # a disk error over the middle pages
        file.seek(database.stat().st_size // 3)
        file.write(b"\xde\xad" * 4096)
    code, checks, _ = await shop.doctor()
    assert code == 1
    status, text = checks["database"]
    assert status == "FAIL" and "restore the newest backup" in text


@pytest.mark.parametrize("their_offset, words", [
    (timedelta(hours=2, minutes=5), "2 hours 5 minutes behind"),
    (-timedelta(days=3, hours=1), "3 days 1 hour ahead of"),
])  # fmt: skip
def test_clock_skew_against_centrals_date_header(their_offset: timedelta, words: str):
    asked = datetime(2031, 3, 9, 12, 0, 0, tzinfo=UTC)
    answered = asked + timedelta(milliseconds=300)
    theirs = format_datetime(asked + their_offset, usegmt=True)
    finding = clock_finding(asked, answered, theirs)
    assert finding.status == "FAIL"
    assert f"this computer's clock is {words} central's" in finding.text
    in_time = clock_finding(asked, answered, format_datetime(asked, usegmt=True))
    assert in_time.status == "ok"


async def test_a_stale_backup_says_what_to_look_for(shop: Shop):
    shop.node.stop()
    backups = Path(shop.env["SHOPNODE_NODE_DATA_DIR"]) / "backups"
    for made in backups.glob("shop-*.db"):
        made.unlink()
    old = backups / "shop-20200101T000000Z.db"  # named as the schedule names its copies
    done = await asyncio.to_thread(shopnode, "backup", str(old), env=shop.env)
    assert done.returncode == 0, done.stderr
    code, checks, _ = await shop.doctor()
    assert code == 1
    status, text = checks["backups"]
    assert status == "FAIL"
    assert text.startswith("the newest backup, shop-20200101T000000Z.db, is ")
    assert " days " in text and "old, but one is due every" in text and "backup failed" in text
