"""The daily digest of who owes most: off by default, at `[bot] digest_time` when set."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from bot.digest import JOB_NAME
from tests.bot.conftest import OWNER, STAFF, RealNode, bot_settings, running_bot
from tests.bot.fake_telegram import FakeBotAPI


async def test_no_digest_unless_a_time_is_set(node: RealNode, telegram: FakeBotAPI) -> None:
    async for runner in running_bot(bot_settings(node, telegram)):
        assert runner.application.job_queue.get_jobs_by_name(JOB_NAME) == ()


async def test_digest_runs_daily_at_the_set_time_and_reaches_owners_only(
    empty_node: RealNode, telegram: FakeBotAPI
) -> None:
    ann = empty_node.add_customer("Ann Lee")
    bob = empty_node.add_customer("Bob Ray")
    empty_node.charge(ann, 1250)
    empty_node.charge(bob, 30000)
    settings = bot_settings(empty_node, telegram, digest_time="08:30", owners={OWNER, 1002})

    async for runner in running_bot(settings):
        app = runner.application
        [job] = app.job_queue.get_jobs_by_name(JOB_NAME)
        next_run = job.next_t.astimezone()
        assert (next_run.hour, next_run.minute) == (8, 30)
        assert (next_run - datetime.now().astimezone()).total_seconds() <= 24 * 3600

        await job.run(app)  # what the scheduler does at 08:30

    sent = telegram.calls_of("sendMessage")
    assert sorted(int(c.params["chat_id"]) for c in sent) == [OWNER, 1002]
    assert STAFF not in [int(c.params["chat_id"]) for c in sent]
    lines = sent[0].text.splitlines()
    assert lines[:2] == ["Daily digest", "Who owes most (total owed $312.50):"]
    assert lines[2:4] == ["1. Bob Ray owes $300.00 today", "2. Ann Lee owes $12.50 today"]


async def test_digest_with_nobody_owing(empty_node: RealNode, telegram: FakeBotAPI) -> None:
    settings = bot_settings(empty_node, telegram, digest_time="21:00")
    async for runner in running_bot(settings):
        [job] = runner.application.job_queue.get_jobs_by_name(JOB_NAME)
        await job.run(runner.application)
    [sent] = telegram.calls_of("sendMessage")
    assert sent.text == "Daily digest\nNobody owes anything right now."


async def test_digest_time_is_the_shops_not_the_machines(
    empty_node: RealNode, telegram: FakeBotAPI
) -> None:
    kiritimati = ZoneInfo("Pacific/Kiritimati")  # UTC+14: 08:30 there is 18:30Z the day before
    settings = bot_settings(empty_node, telegram, digest_time="08:30", zone=kiritimati)
    async for runner in running_bot(settings):
        [job] = runner.application.job_queue.get_jobs_by_name(JOB_NAME)
        shop_time, utc_time = job.next_t.astimezone(kiritimati), job.next_t.astimezone(UTC)
    assert (shop_time.hour, shop_time.minute) == (8, 30)
    assert (utc_time.hour, utc_time.minute) == (18, 30)
