"""The pure pieces: reading commands, packing buttons, idempotency keys, settings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from telegram import Chat, Message

from bot import BotSettings, from_config
from bot.actions import (
    BALANCE,
    CANCEL,
    CANCEL_PATTERN,
    CONFIRM,
    CONFIRM_PATTERN,
    MAX_CALLBACK_DATA,
    MAX_NUMBER,
    MONEY_KINDS,
    PAY,
    PICK,
    REDEEM,
    Action,
    canonical_id,
    confirmation_id,
    idempotency_key,
    parse_data,
)
from bot.amounts import MAX_AMOUNT, Currency, decimal_text, format_amount, parse_amount
from bot.arguments import AmountArgs, command_rest, split_amount
from bot.texts import ledger_text
from node.api.openapi import DOCUMENT
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


@pytest.mark.parametrize(
    ("settings", "minor", "shown", "plain"),
    [
        ({"currency": "USD", "currency_decimals": 2}, -502500, "-$5,025.00", "-5025.00"),
        ({"currency": "JPY", "currency_decimals": 0}, 1500, "¥1,500", "1500"),
        ({"currency": "KWD", "currency_decimals": 3}, 1234567, "KWD 1,234.567", "1234.567"),
        # The node's word on decimals counts, not what the bot may think of the code.
        ({"currency": "USD", "currency_decimals": 3}, 1500, "$1.500", "1.500"),
    ],
)
def test_amounts_follow_the_currency_the_node_reports(
    settings: dict, minor: int, shown: str, plain: str
) -> None:
    currency = Currency.of(settings)
    assert format_amount(minor, currency) == shown
    assert decimal_text(minor, currency) == plain
    assert parse_amount(plain.lstrip("-"), currency) == abs(minor)


def test_the_bots_amount_cap_is_the_apis() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["SaleInput"]["properties"]["total"]["maximum"] == MAX_AMOUNT == MAX_NUMBER
    assert parse_amount(str(MAX_AMOUNT // 100), Currency("USD", 2)) == MAX_AMOUNT
    with pytest.raises(ValueError, match="too large"):
        parse_amount(f"{MAX_AMOUNT // 100}.01", Currency("USD", 2))


def test_command_rest_drops_the_command_and_bot_name() -> None:
    assert command_rest("/pay@shop_bot  ann 50 ") == "ann 50"
    assert command_rest("/dues") == ""


def test_button_data_fits_telegram_and_reads_back() -> None:
    action = Action(PAY, str(uuid.uuid4()), 10**12)
    for verb in (CONFIRM, PICK):
        data = action.data(verb)
        assert len(data.encode()) <= MAX_CALLBACK_DATA
        assert parse_data(data) == (verb, action)


@pytest.mark.parametrize("customer_id", ["cust-42", "x/../reports", "", "{" + "0" * 32 + "}"])
def test_only_a_uuid_goes_into_a_button(customer_id: str) -> None:
    with pytest.raises(ValueError):
        Action(REDEEM, customer_id, 100).data(CONFIRM)


def test_button_amounts_are_bounded_and_views_carry_none() -> None:
    cid = str(uuid.uuid4())
    for bad in (Action(PAY, cid, 0), Action(PAY, cid, MAX_NUMBER + 1), Action(BALANCE, cid, 5)):
        with pytest.raises(ValueError):
            bad.data(PICK)
    assert parse_data(Action(BALANCE, cid).data(PICK)) == (PICK, Action(BALANCE, cid))


PACKED = Action(PAY, "0191a3f4-5b6c-7d8e-9f00-112233445566", 1).data(CONFIRM).split("|")[2]


@pytest.mark.parametrize(
    "data",
    [
        "", "no", "ok", "pk|P", "ok|X|abc|1", "ok|P|short|1", "ok|P|~x|-1",
        "pk|B|~x/../reports/receivables?limit=1000|0",  # the old escape hatch for ids
        "pk|B|x/../reports/receivables?limit=1000|0",
        f"pk|B|{PACKED[:-1]}/|0", f"pk|B|{PACKED[:-1]}B|0",  # not the canonical packing
        f"ok|P|{PACKED}|0", f"ok|P|{PACKED}|01", f"ok|P|{PACKED}|-5", f"ok|P|{PACKED}|1.5",
        f"ok|P|{PACKED}|{MAX_NUMBER + 1}", f"ok|P|{PACKED}|{'9' * 40}",
        f"ok|B|{PACKED}|0",  # a view is never confirmed
        f"pk|B|{PACKED}|7",  # a view carries no number
        f"ok|P|{PACKED}|1\n", f" ok|P|{PACKED}|1", f"ok|P|{PACKED}|1|x", f"ok|p|{PACKED}|1",
        f"ok|P|{PACKED}|１",  # a full-width digit is a digit to str.isdigit, not to the grammar
    ],
)  # fmt: skip
def test_foreign_button_data_carries_no_action(data: str) -> None:
    assert parse_data(data) == ("", None)


def test_the_grammar_accepts_exactly_what_the_bot_makes() -> None:
    cid = "0191a3f4-5b6c-7d8e-9f00-112233445566"
    for kind in MONEY_KINDS:
        for amount in (1, 5025, MAX_NUMBER):
            action = Action(kind, cid, amount)
            assert CONFIRM_PATTERN.fullmatch(action.data(CONFIRM))
            assert parse_data(action.data(PICK)) == (PICK, action)
    assert CANCEL_PATTERN.fullmatch(CANCEL) and not CANCEL_PATTERN.fullmatch("no ")
    assert canonical_id(cid.upper()) == cid
    for bad in ("../x", cid + "/ledger", cid + "?x=1", "%2e%2e", "urn:uuid:" + cid, cid[:-1]):
        with pytest.raises(ValueError):
            canonical_id(bad)


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
        '[node]\ntimezone = "Asia/Jakarta"\n'
    )
    cfg = load_config(cfg_file, environ={"SHOPNODE_BOT_API_URL": "http://127.0.0.1:9/"})

    settings = from_config(cfg)

    assert settings.owners == {11} and settings.staff == {22}  # an owner stays an owner
    assert settings.bot_api_base_url == "http://127.0.0.1:9/bot"
    assert settings.digest_time == "07:45"
    assert str(settings.zone) == "Asia/Jakarta"  # the digest's 07:45 is the shop's
    assert (settings.node_url, settings.node_token) == ("http://127.0.0.1:8080", "sn_x")
    assert settings.node_staff_token == "" and settings.node_tokens() == {"owner": "sn_x"}
    in_process = from_config(cfg, node_url="http://127.0.0.1:8081", node_token="sn_own")
    assert (in_process.node_url, in_process.node_token) == ("http://127.0.0.1:8081", "sn_own")


def test_staff_token_from_config_and_never_shown(tmp_path) -> None:
    cfg_file = tmp_path / "shopnode.toml"
    cfg_file.write_text('[bot]\nnode_token = "sn_owner_x"\nnode_staff_token = "sn_staff_x"\n')
    cfg = load_config(cfg_file, environ={})
    settings = from_config(cfg)
    assert settings.node_tokens() == {"owner": "sn_owner_x", "staff": "sn_staff_x"}
    assert "sn_staff_x" not in repr(settings)
    from_env = load_config(cfg_file, environ={"SHOPNODE_BOT_NODE_STAFF_TOKEN": "sn_env"})
    assert from_config(from_env).node_staff_token == "sn_env"
    in_process = from_config(cfg, node_token="sn_own", node_staff_token="sn_own_staff")
    assert in_process.node_tokens() == {"owner": "sn_own", "staff": "sn_own_staff"}


def test_default_bot_api_is_telegrams() -> None:
    settings = BotSettings(token="1:a", node_url="http://n", node_token="t")
    assert settings.bot_api_base_url == "https://api.telegram.org/bot"


def test_entry_times_read_in_the_shops_zone_from_the_nodes_settings() -> None:
    settings = {"currency": "USD", "currency_decimals": 2, "timezone": "Asia/Karachi"}
    entry = {"created_at": "2020-05-17T19:30:00.000Z", "type": "debit", "amount": 500,
             "balance_after": -500, "description": "Sale REC-20200518-001"}  # fmt: skip
    text = ledger_text({"name": "Ann", "ledger_balance": -500}, [entry], settings)
    assert text.splitlines()[1].startswith("18 May 2020 · Sale REC-20200518-001")  # 00:30 PKT
