"""The pure pieces: reading commands, packing buttons, idempotency keys, settings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from telegram import Chat, Message

from bot import BotSettings, from_config
from bot.actions import (
    CONFIRM,
    MAX_CALLBACK_DATA,
    PAY,
    PICK,
    REDEEM,
    Action,
    confirmation_id,
    idempotency_key,
    parse_data,
)
from bot.arguments import AmountArgs, command_rest, split_amount
from node.config import load_config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ann 50", AmountArgs("ann", "50", "")),
        ("ann lee 50.25 cash at door", AmountArgs("ann lee", "50.25", "cash at door")),
        ("5550100 12 for invoice 7", AmountArgs("5550100", "12", "for invoice 7")),
        ('"+1 555 0100" 12', AmountArgs("+1 555 0100", "12", "")),
        ("ann -5", AmountArgs("ann", "-5", "")),
        ("ann 50.123", AmountArgs("ann", "50.123", "")),
        ("ann", None),
        ("ann fifty", None),
        ("", None),
    ],
)
def test_split_amount(text: str, expected: AmountArgs | None) -> None:
    assert split_amount(text) == expected


def test_command_rest_drops_the_command_and_bot_name() -> None:
    assert command_rest("/pay@shop_bot  ann 50 ") == "ann 50"
    assert command_rest("/dues") == ""


def test_button_data_fits_telegram_and_reads_back() -> None:
    action = Action(PAY, str(uuid.uuid4()), 10**12)
    for verb in (CONFIRM, PICK):
        data = action.data(verb)
        assert len(data.encode()) <= MAX_CALLBACK_DATA
        assert parse_data(data) == (verb, action)


def test_button_data_with_a_non_uuid_id() -> None:
    action = Action(REDEEM, "cust-42", 100)
    assert parse_data(action.data(CONFIRM)) == (CONFIRM, action)


@pytest.mark.parametrize("data", ["", "no", "ok|X|abc|1", "ok|P|short|1", "ok|P|~x|-1", "pk|P"])
def test_foreign_button_data_carries_no_action(data: str) -> None:
    assert parse_data(data)[1] is None


def test_idempotency_key_is_the_same_for_every_tap_on_one_confirmation() -> None:
    sent = datetime(2026, 5, 18, 10, 0, tzinfo=UTC)
    message = Message(501, sent, Chat(1001, "private"))
    edited_copy = Message(501, sent, Chat(1001, "private"), text="✅ Recorded")
    action = Action(PAY, str(uuid.uuid4()), 5000)

    key = idempotency_key(confirmation_id(7, message), action)

    assert key == idempotency_key(confirmation_id(7, edited_copy), action)
    assert key != idempotency_key(
        confirmation_id(7, message), Action(PAY, action.customer_id, 5001)
    )
    later = Message(501, datetime(2026, 5, 19, tzinfo=UTC), Chat(1001, "private"))
    assert key != idempotency_key(confirmation_id(7, later), action)
    assert len(key) < 128


def test_settings_from_config_and_environment(tmp_path) -> None:
    cfg_file = tmp_path / "shopnode.toml"
    cfg_file.write_text(
        '[bot]\ntoken = "1:abc"\nowners = [11]\nstaff = [22, 11]\ndigest_time = "07:45"\n'
        'node_url = "http://127.0.0.1:8080"\nnode_token = "sn_x"\n'
    )
    cfg = load_config(cfg_file, environ={"SHOPNODE_BOT_API_URL": "http://127.0.0.1:9/"})

    settings = from_config(cfg)

    assert settings.owners == {11} and settings.staff == {22}  # an owner stays an owner
    assert settings.bot_api_base_url == "http://127.0.0.1:9/bot"
    assert settings.digest_time == "07:45"
    assert (settings.node_url, settings.node_token) == ("http://127.0.0.1:8080", "sn_x")
    in_process = from_config(cfg, node_url="http://127.0.0.1:8081", node_token="sn_own")
    assert (in_process.node_url, in_process.node_token) == ("http://127.0.0.1:8081", "sn_own")


def test_default_bot_api_is_telegrams() -> None:
    settings = BotSettings(token="1:a", node_url="http://n", node_token="t")
    assert settings.bot_api_base_url == "https://api.telegram.org/bot"
