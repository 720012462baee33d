"""The baseline server: a bare aiohttp app answering GET /hello with a small JSON object.

bench/run.py runs it in a process of its own, as it runs `shopnode serve`, and sends both
the same load; the node's req/s are read against this one's. It listens on 127.0.0.1 on
a free port and prints `listening on http://127.0.0.1:PORT` once it does.

Run: python bench/hello.py   (SIGTERM or Ctrl-C stops it)
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


async def serve() -> None:
    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    await stopped.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve())
