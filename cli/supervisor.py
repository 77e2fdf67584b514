"""`metaagent dev`: every component as its own supervised process.

Each child's output is prefixed with its name on this terminal and kept in
`<state dir>/logs/<component>.log`. A child that dies is reported and restarted with backoff;
one that keeps dying stops the run with a clear message. Ctrl-C or SIGTERM stops everything:
SIGTERM to each child, a grace period, then SIGKILL for any that remain.
"""

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from cli.components import COMPONENTS
from cli.status import collect
from gateway.auth import ensure_dev_jwt_secret
from gateway.settings import GatewaySettings
from services.mesh.certs import ensure_dev_pki

CHUNK_BYTES = 64 * 1024
MAX_RESTARTS = 3
RESTART_WINDOW_SECONDS = 60.0
READY_TIMEOUT_SECONDS = 60.0


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process | None = None
    restarts: list[float] = field(default_factory=list)
    pump: asyncio.Task[None] | None = None


class Supervisor:
    """Starts, watches and stops the mesh's processes."""

    def __init__(self, settings: GatewaySettings, out: TextIO = sys.stdout) -> None:
        self.settings = settings
        self.out = out
        self.children = {name: Child(name) for name in COMPONENTS}
        self.log_dir = settings.state_dir / "logs"
        self._stopping = asyncio.Event()

    @classmethod
    def from_environment(cls) -> "Supervisor":
        return cls(GatewaySettings())

    def say(self, message: str) -> None:
        print(f"{'metaagent':>12} | {message}", file=self.out, flush=True)

    async def run(self) -> int:
        written = ensure_dev_pki(self.settings.certs_dir)
        if written:
            self.say(f"made development certificates in {self.settings.certs_dir}")
        if not self.settings.production:
            ensure_dev_jwt_secret(self.settings)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        tasks: list[asyncio.Task[object]] = []
        try:
            for child in self.children.values():
                await self._start(child)
            watchers = [asyncio.create_task(self._watch(c)) for c in self.children.values()]
            stop = asyncio.create_task(self._stopping.wait())
            tasks = [*watchers, stop, asyncio.create_task(self._announce_when_ready())]
            done, _ = await asyncio.wait([stop, *watchers], return_when=asyncio.FIRST_COMPLETED)
            failure = next((t.result() for t in done if t is not stop and t.result()), None)
        finally:
            for task in tasks:
                task.cancel()
            await self._stop_all()
        if failure:
            self.say(f"stopped: {failure}")
            return 1
        self.say("stopped")
        return 0

    async def _start(self, child: Child) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("METRICS_PORT", None)  # one port per process: <COMPONENT>_METRICS_PORT below
        own_metrics_port = os.environ.get(f"{child.name.upper()}_METRICS_PORT")
        if own_metrics_port is not None:
            env["METRICS_PORT"] = own_metrics_port
        child.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli",
            "serve",
            child.name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        child.pump = asyncio.create_task(self._pump(child, child.process))

    async def _pump(self, child: Child, process: asyncio.subprocess.Process) -> None:
        """Copy the child's output to its log file and, prefixed, to this terminal.

        Reads in chunks, so no line length can stall the pipe (and with it the child)."""
        assert process.stdout is not None
        pending = b""
        with (self.log_dir / f"{child.name}.log").open("ab", buffering=0) as log_file:
            while chunk := await process.stdout.read(CHUNK_BYTES):
                log_file.write(chunk)
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                if len(pending) > CHUNK_BYTES:
                    lines.append(pending)
                    pending = b""
                for line in lines:
                    self._echo(child.name, line)
            if pending:
                self._echo(child.name, pending)

    def _echo(self, name: str, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        print(f"{name:>12} | {text}", file=self.out, flush=True)

    async def _watch(self, child: Child) -> str | None:
        """Restart `child` when it dies; return a reason to stop the run when it keeps dying."""
        while True:
            assert child.process is not None
            code = await child.process.wait()
            await self._drain(child)
            if self._stopping.is_set():
                return None
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_SECONDS]
            if len(child.restarts) >= MAX_RESTARTS:
                return (
                    f"{child.name} exited with code {code} {MAX_RESTARTS + 1} times within "
                    f"{RESTART_WINDOW_SECONDS:.0f}s; see {self.log_dir / (child.name + '.log')}"
                )
            child.restarts.append(now)
            delay = 0.5 * 2 ** (len(child.restarts) - 1)
            self.say(f"{child.name} exited with code {code}; restarting in {delay:.1f}s")
            await asyncio.sleep(delay)
            await self._start(child)

    async def _announce_when_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            report = await collect(self.settings)
            if report["healthy"]:
                url = self.settings.gateway_url
                self.say(f"all components SERVING; gateway at {url}")
                self.say("get a token:  .venv/bin/metaagent token --tenant demo")
                self.say(f"then POST {url}/v2/agents/meta-agent/process (see README)")
                return
            await asyncio.sleep(0.5)
        self.say(
            f"not every component is SERVING after {READY_TIMEOUT_SECONDS:.0f}s: "
            "run `metaagent status`"
        )

    async def _stop_all(self) -> None:
        running = [
            c.process
            for c in self.children.values()
            if c.process is not None and c.process.returncode is None
        ]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        grace = self.settings.grpc_shutdown_grace_seconds + 2.0
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), grace)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    self.say(f"pid {process.pid} did not stop within {grace:.0f}s; killing it")
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in running))
        for child in self.children.values():
            await self._drain(child)

    async def _drain(self, child: Child) -> None:
        """Wait for the child's output to be copied; a failed copy must not stop supervision."""
        if child.pump is not None:
            try:
                await child.pump
            except (asyncio.CancelledError, Exception) as error:
                if not isinstance(error, asyncio.CancelledError):
                    self.say(f"lost part of {child.name}'s output: {error}")
