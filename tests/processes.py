"""One launcher for the shopnode processes that tests and benchmarks run.

A shop node (`shopnode serve`), central (`shopnode central serve`), the bot alone
(`shopnode bot`) and one-shot commands (`shopnode sync`, `token create`, ...) all start here,
as `python -m node ...` (the console script's target), from a clean environment: no
SHOPNODE_* setting of the developer's leaks in (an unknown one is a config error, and a bot
token must not), and the checkout is importable. Servers listen on 127.0.0.1 (port 0 unless
the environment names one); `start_node` and `start_central` return once the server logs its
"listening on URL" line, with that URL. Every child is stopped the same way: a signal
(SIGTERM unless told otherwise), then SIGKILL if it has not exited in time.

Output goes to files, so a restart appends to the same log and a test reads what one run
wrote. A one-shot command that must wait for another can be started ahead (`held`: the
interpreter up and shopnode imported) and run when told (`run_held`), node.cli.main all
the same. The benchmarks import this module too (bench/ puts the repository root on sys.path):
it imports nothing of pytest or of the tests' fixtures.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0  # seconds until a server must listen
STOP_TIMEOUT = 15.0  # seconds a child gets to exit after its signal, before SIGKILL
LISTENING = re.compile(r'listening on (http://[^\s"]+)')  # in a text or a JSON line


class StartFailed(RuntimeError):
    """A server exited, or did not listen in time; the message holds its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: ours without SHOPNODE_*, the checkout on PYTHONPATH, and
    `extra` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPNODE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **(extra or {})}


def shopnode(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess:
    """Run one `shopnode` command to its end, as a user would; its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        **kw,
    )


# `python -m node ARGS` (node/__main__.py), held once shopnode is imported until a line on
# its stdin says go.
_HELD = "import sys; from node.cli import main; sys.stdin.readline(); sys.exit(main(sys.argv[1:]))"


def held(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """`shopnode ARGS` started now but run only when `run_held` says go: a command that has
    to wait for another then costs its own work, not its interpreter's start and imports
    (~0.2 s for `shopnode sync`)."""
    return subprocess.Popen(
        [sys.executable, "-c", _HELD, *args],
        env=child_env(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd or REPO,
    )


def run_held(proc: subprocess.Popen, timeout: float = 60) -> subprocess.CompletedProcess:
    """Let a `held` command run to its end; its exit code and output, as `shopnode` gives
    them; SIGKILLed if it outlives `timeout`."""
    try:
        stdout, stderr = proc.communicate("go\n", timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def spawn(
    *args: str,
    env: Mapping[str, str],
    log: Path,
    out: Path | None = None,
    cwd: Path | None = None,
    max_files: int | None = None,
) -> subprocess.Popen:
    """Start `shopnode ARGS` in the background: stderr appended to `log`, stdout to `out`
    (or to `log` too). `max_files` lowers the child's open-file limit (RLIMIT_NOFILE), as
    on a small box."""
    return _popen([sys.executable, "-m", "node", *args], env, log, out, cwd, max_files)


def spawn_python(
    code: str, *, env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> subprocess.Popen:
    """Start `python -c CODE` in the background, its output appended to `log`."""
    return _popen([sys.executable, "-c", code], env, log, None, cwd, None)


def _popen(
    command: list[str],
    env: Mapping[str, str],
    log: Path,
    out: Path | None,
    cwd: Path | None,
    max_files: int | None,
) -> subprocess.Popen:
    # The child keeps its own copies of these descriptors; ours close at once.
    with open(log, "ab") as err, open(out or log, "ab") as stdout:
        return subprocess.Popen(
            command,
            env=child_env(env),
            stdout=stdout,
            stderr=err,
            cwd=cwd or REPO,
            preexec_fn=(lambda: _limit_files(max_files)) if max_files else None,
        )


def _limit_files(count: int) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
    """Send `sig` (unless the child has exited), wait up to `timeout` seconds, then SIGKILL
    it; its exit code (negative: the signal that ended it)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _since(path: Path, offset: int) -> str:
    """What `path` holds from byte `offset` on."""
    if not path.exists():
        return ""
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read().decode(errors="replace")


@dataclass
class Server:
    """A `shopnode` command run in the background: its arguments, environment, working
    directory and output files and, once started, its process and (a server that listens)
    its URL. The output files may hold earlier runs: `output()` is the current run's."""

    args: tuple[str, ...]
    env: dict[str, str]  # the dict given: a test may change it for the next command or start
    log: Path  # stderr
    out: Path  # stdout (the same file as `log`, or not)
    cwd: Path = REPO
    max_files: int | None = None
    url: str = ""
    proc: subprocess.Popen = field(init=False, repr=False)
    _log_from: int = field(default=0, init=False, repr=False)
    _out_from: int = field(default=0, init=False, repr=False)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self, timeout: float = START_TIMEOUT, wait: bool = True) -> Self:
        """Start the command and, with `wait`, wait for its "listening on URL" line in this
        run's part of the log; SIGKILL it and raise StartFailed if it exits first or takes
        `timeout` seconds."""
        self._log_from, self._out_from = _size(self.log), _size(self.out)
        self.proc = spawn(
            *self.args,
            env=self.env,
            log=self.log,
            out=self.out,
            cwd=self.cwd,
            max_files=self.max_files,
        )
        if not wait:
            return self
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                match = LISTENING.search(_since(self.log, self._log_from))
                if match:
                    self.url = match.group(1)
                    self._started()
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        except BaseException:  # interrupted (Ctrl-C, a signal): leave no child behind
            stop(self.proc, signal.SIGKILL)
            raise
        stop(self.proc, signal.SIGKILL)
        raise StartFailed(
            f"shopnode {' '.join(self.args)} did not start:\n"
            f"{_since(self.log, self._log_from)[-3000:]}"
        )

    def _started(self) -> None:
        """What a kind of server reads once it listens."""

    def restart(self, **env: str) -> Self:
        """Start it again in place once stopped: the same command, data and log, its
        environment with `env` on top (a server on port 0 gets a new port)."""
        assert self.proc.poll() is not None, "stop it first"
        self.env = {**self.env, **env}
        return self.start()

    def output(self) -> str:
        """What this run wrote: its log, then its stdout when that has a file of its own."""
        text = _since(self.log, self._log_from)
        return text if self.out == self.log else text + _since(self.out, self._out_from)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """`sig`, then SIGKILL after `timeout` seconds; the exit code."""
        return stop(self.proc, sig, timeout)


@dataclass
class NodeProcess(Server):
    """`shopnode serve`, with the owner token it printed on its first start (else None; a
    restart keeps the token it had)."""

    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _started(self) -> None:
        lines = _since(self.out, self._out_from).strip().splitlines()
        if lines and lines[-1].startswith("sn_"):
            self.token = lines[-1]


@dataclass
class Central(Server):
    """`shopnode central serve`."""

    def add_store(self, name: str, timeout: float = 60) -> dict[str, str]:
        """Register a store with `shopnode central add-store`; its id and token."""
        done = shopnode(
            "central", "add-store", "--name", name, env=self.env, cwd=self.cwd, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"add-store {name} failed: {done.stderr.strip()[-500:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def start_node(
    env: dict[str, str], log: Path, cwd: Path | None = None, max_files: int | None = None
) -> NodeProcess:
    """`shopnode serve`, once it listens; its stdout goes next to `log` (`.out`), where a
    first start prints the owner token (read into `token`)."""
    node = NodeProcess(("serve",), env, log, log.with_suffix(".out"), cwd or REPO, max_files)
    return node.start()


def start_central(
    env: dict[str, str], log: Path, cwd: Path | None = None, timeout: float = START_TIMEOUT
) -> Central:
    """`shopnode central serve`, once it listens; stdout and stderr both go to `log`."""
    return Central(("central", "serve"), env, log, log, cwd or REPO).start(timeout)


def start_bot(env: dict[str, str], log: Path, cwd: Path | None = None) -> Server:
    """`shopnode bot`, the bot alone. It listens on nothing, so this does not wait: a test
    waits for its first answer in the chat. Its output goes to `log`."""
    return Server(("bot",), env, log, log, cwd or REPO).start(wait=False)
