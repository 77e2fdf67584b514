"""The supervisor copies any child output, however long its lines, without stalling it."""

import asyncio
import io
import sys
from pathlib import Path

from cli.supervisor import Child, Supervisor
from gateway.settings import GatewaySettings

CHATTY_CHILD = "import sys; sys.stdout.write('x' * 300_000 + '\\n' + 'done\\n' + 'tail')"


async def test_a_line_longer_than_any_buffer_is_copied_whole(tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = Supervisor(GatewaySettings(state_dir=tmp_path), out=out)
    supervisor.log_dir.mkdir(parents=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHATTY_CHILD, stdout=asyncio.subprocess.PIPE
    )
    await asyncio.wait_for(supervisor._pump(Child("llm"), process), 10)
    assert await process.wait() == 0
    logged = (tmp_path / "logs" / "llm.log").read_bytes()
    assert logged == b"x" * 300_000 + b"\n" + b"done\n" + b"tail"
    echoed = out.getvalue().splitlines()
    assert echoed[-2:] == [f"{'llm':>12} | done", f"{'llm':>12} | tail"]
    assert sum(line.count("x") for line in echoed) == 300_000
