"""The events feed: owners and integrations read the node's facts in commit order, page by
cursor, and never see a deleted or anonymized customer's personal data."""

from __future__ import annotations

import json

from node import tokens
from tests.node.conftest import CUSTOMERS, problem
from tests.processes import shopnode

FEED = "/api/v1/events"


async def read_all(api, after: int = 0, limit: int = 2, **kw) -> list[dict]:
    """Every event after `after`, a page of `limit` at a time, following next_cursor."""
    seen: list[dict] = []
    while True:
        page = await api.ok("GET", f"{FEED}?after={after}&limit={limit}", **kw)
        seen += page["events"]
        if not page["events"]:
            assert page["next_cursor"] == after
            return seen
        assert len(page["events"]) <= limit
        after = page["next_cursor"]


async def test_owner_and_integration_tokens_read_the_feed_staff_do_not(api):
    secret = tokens.create_token("pos-plugin", "integration")
    integration = {"Authorization": f"Bearer {secret}"}
    await api.customer("Feed Reader")
    assert (await api.ok("GET", FEED, headers=integration))["events"]
    assert (await api.ok("GET", FEED))["events"]
    await problem(await api.get(FEED, staff=True), 403)
    # An integration token reads the feed and nothing else.
    for method, path in [("GET", CUSTOMERS), ("POST", CUSTOMERS), ("GET", "/api/v1/settings"),
                         ("GET", "/api/v1/telegram/receipts/cursor")]:  # fmt: skip
        await problem(await api.request(method, path, headers=integration), 403)
    await problem(await api.client.get(FEED), 401)


async def test_paging_by_cursor_gives_every_fact_once_in_commit_order(api):
    ann = await api.customer("Ann Feed")
    await api.sale(ann["id"], 2500, "account")
    await api.pay(ann["id"], 1000)
    bob = await api.customer("Bob Feed")
    await api.ok("PATCH", f"{CUSTOMERS}/{bob['id']}", json={"notes": "likes tea"})
    events = await read_all(api)
    kinds = [(e["kind"], e["entity_id"]) for e in events]
    assert kinds == [("customer.created", ann["id"]), ("sale.recorded", kinds[1][1]),
                     ("ledger.credit", kinds[2][1]), ("customer.created", bob["id"]),
                     ("customer.updated", bob["id"])]  # fmt: skip
    cursors = [e["cursor"] for e in events]
    assert cursors == sorted(set(cursors))
    assert events[1]["body"]["sale"][0]["total"] == 2500
    # A reader that stopped half way goes on from its cursor and sees only what is new.
    later = await api.customer("Cy Feed")
    rest = await read_all(api, after=cursors[-1])
    assert [(e["kind"], e["entity_id"]) for e in rest] == [("customer.created", later["id"])]
    page = await api.ok("GET", f"{FEED}?after={rest[-1]['cursor']}")
    assert page == {"events": [], "next_cursor": rest[-1]["cursor"], "head": rest[-1]["cursor"]}


async def test_bad_cursors_and_limits_are_refused(api):
    for query in ("after=-1", "after=x", "limit=0", "limit=101", "after=1.5"):
        await problem(await api.get(f"{FEED}?{query}"), 422)


async def test_an_anonymized_customers_personal_fields_never_appear(api):
    personal = {"name": "Zed Quimby", "email": "zed@example.com", "phone": "+15550199",
                "address": "1 Secret Lane", "notes": "allergic to nuts"}  # fmt: skip
    zed = await api.customer(**personal)
    await api.ok("PATCH", f"{CUSTOMERS}/{zed['id']}", json={"email": "zed2@example.com"})
    await api.sale(zed["id"], 1000, "account")
    await api.pay(zed["id"], 1000)
    before = json.dumps(await read_all(api, limit=100))
    assert "zed2@example.com" in before and "Zed Quimby" in before
    await api.ok("DELETE", f"{CUSTOMERS}/{zed['id']}")  # history: anonymized
    after = json.dumps(await read_all(api, limit=100))
    for value in [*personal.values(), "zed2@example.com", "15550199"]:
        assert value not in after, value
    assert '"customer.anonymized"' in after


def test_the_cli_makes_integration_tokens(node_env):
    done = shopnode("token", "create", "--name", "pos", "--role", "integration", env=node_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("sn_")
    assert "integration" in shopnode("token", "list", env=node_env).stdout
