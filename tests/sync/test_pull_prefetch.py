"""The next page is requested before the current one is applied; applying it holds the
event loop, so that request's timeout runs meanwhile. A page slower to apply than the
timeout must not fail the round (found by review: catch-up then moved one page per round)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
from aiohttp import web

from sync import worker


async def test_a_page_slower_to_apply_than_the_timeout_does_not_fail_the_round(
    aiohttp_server, monkeypatch
):
    async def pull(request: web.Request) -> web.Response:
        after = int(request.query["after"])
        return web.json_response({"changes": [], "next": after + 1, "next_id": f"c{after + 1}",
                                  "more": after < 3, "high": 4, "reset": False, "epoch": "e"})

    app = web.Application()
    app.router.add_get(worker.PULL_PATH, pull)
    server = await aiohttp_server(app)
    applied: list[int] = []

    def slow_apply(page: list, next_cursor: int, next_id: str, origin: str, epoch: str = "",
                   ) -> tuple[int, int]:  # fmt: skip
        time.sleep(0.6)  # longer than the 0.3 s timeout below
        applied.append(next_cursor)
        return 0, 0

    monkeypatch.setattr(worker, "apply_page", slow_apply)
    monkeypatch.setattr(worker, "get_meta", lambda key: None)
    monkeypatch.setattr(worker, "_retry_clock_waits", lambda origin: 0)
    monkeypatch.setattr(worker.changes, "origin_id", lambda: "origin")
    result = worker.RoundResult()
    timeout = aiohttp.ClientTimeout(total=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        transport: Any = worker.HttpTransport(http, str(server.make_url("")).rstrip("/"))
        await worker.pull_all(transport, result, None)
    assert applied == [1, 2, 3, 4]
