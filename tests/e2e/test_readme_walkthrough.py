"""The README's walk-through, run as a new user pastes it: every fenced `sh` block that follows a
`<!-- walkthrough -->` line, in order, in one bash (so `TOKEN=$(...)` carries over), from the
repository root, against `metaagent dev` on free ports (the blocks take the gateway's address
from `GATEWAY`). Every command must succeed (`set -e`; the README's curls use
`--fail-with-body`, so an HTTP error fails the command), and what comes back must be what the
README promises: the tenant created, the catalogue stored, found, and talked about, streamed,
and ordered from.

The example files the blocks send (`examples/…`) are checked without a mesh as well, so a bad
edit to them is reported by a fast test too.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import admin_convert
from gateway.admin_models import TenantConfig
from services.mesh.catalogue import check_catalogue
from services.mesh.tenant_rules import tenant_config_violations
from tests.support.mesh_process import METAAGENT, ROOT, mesh_environment

README = ROOT / "README.md"
BLOCK = re.compile(r"^<!-- walkthrough -->\n```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
SENT_FILE = re.compile(r"--data-binary @(\S+)")
SEPARATOR = "@@walkthrough-block"
METAAGENT_BIN = ROOT / ".venv" / "bin" / "metaagent"


def walkthrough_blocks(readme: str) -> list[str]:
    return [match.group(1) for match in BLOCK.finditer(readme)]


def sent_files(blocks: list[str]) -> list[Path]:
    return [ROOT / name for block in blocks for name in SENT_FILE.findall(block)]


def catalogue_of(blocks: list[str]) -> list[dict[str, Any]]:
    """The products of the JSON Lines catalogue the walk-through ingests."""
    (catalogue,) = [path for path in sent_files(blocks) if path.suffix == ".jsonl"]
    return [json.loads(line) for line in catalogue.read_text().splitlines() if line.strip()]


# --- without a mesh ----------------------------------------------------------------------------


def test_the_walkthrough_goes_from_a_token_to_a_streamed_chat() -> None:
    script = "\n".join(walkthrough_blocks(README.read_text()))
    for step in (
        "GATEWAY=${GATEWAY:-http://127.0.0.1:8080}",
        "metaagent token --tenant bluebird --role platform-admin",
        '-X PUT "$GATEWAY/v2/tenants/bluebird"',
        "Content-Type: application/x-ndjson",
        "/knowledge/search",
        "/v2/agents/meta-agent/process",
        "Accept: text/event-stream",
    ):
        assert step in script, f"the README's walk-through lost: {step}"
    assert "http://127.0.0.1:8080/" not in script, "use $GATEWAY, so the test can run it"


def test_the_example_tenant_and_catalogue_are_valid() -> None:
    blocks = walkthrough_blocks(README.read_text())
    files = sent_files(blocks)
    assert files and all(path.is_file() for path in files), files
    (tenant_file,) = [path for path in files if path.suffix == ".json"]
    config = TenantConfig.model_validate_json(tenant_file.read_bytes())
    message = admin_convert.tenant_config(config, config.tenant_id or "bluebird")
    assert tenant_config_violations(message, "bluebird") == []
    (catalogue_file,) = [path for path in files if path.suffix == ".jsonl"]
    checked = check_catalogue(catalogue_file.read_bytes().split(b"\n"))
    assert checked.errors == [] and len(checked.products) == len(catalogue_of(blocks))


# --- against the whole mesh --------------------------------------------------------------------


@dataclass
class Walk:
    returncode: int
    outputs: list[str]
    """What each block printed, in order (the blocks before the failure, when one failed)."""
    stderr: str


def run_walkthrough(blocks: list[str], env: dict[str, str]) -> Walk:
    script = ["set -Eeuo pipefail", "trap 'echo \"failed: $BASH_COMMAND\" >&2' ERR"]
    for index, block in enumerate(blocks):
        script += [f"printf '\\n{SEPARATOR} {index}\\n'", block]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    outputs = re.split(rf"^{SEPARATOR} \d+$", result.stdout, flags=re.MULTILINE)[1:]
    return Walk(result.returncode, [output.strip() for output in outputs], result.stderr)


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def sse_events(output: str) -> list[tuple[str, dict[str, Any]]]:
    events, name = [], ""
    for line in output.splitlines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


@dataclass
class Mesh:
    env: dict[str, str]
    gateway_url: str


def _healthy(env: dict[str, str]) -> bool:
    status = subprocess.run(
        [*METAAGENT, "status"], cwd=ROOT, env=env, capture_output=True, timeout=30
    )
    return status.returncode == 0


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the README's walk-through needs curl")
        pytest.skip("the README's walk-through needs curl")
    assert METAAGENT_BIN.exists(), "the README runs .venv/bin/metaagent: run `make run` once"
    state = tmp_path_factory.mktemp("walkthrough")
    env = mesh_environment(state)
    with (state / "dev-output.log").open("wb") as output:
        process = subprocess.Popen(
            [*METAAGENT, "dev"], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 45
            while not _healthy(env):
                assert process.poll() is None, (state / "dev-output.log").read_text()[-4000:]
                assert time.monotonic() < deadline, "the mesh did not become healthy"
                time.sleep(0.5)
            url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
            yield Mesh({**env, "GATEWAY": url}, url)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_walkthrough_runs_as_written(mesh: Mesh) -> None:
    blocks = walkthrough_blocks(README.read_text())
    walk = run_walkthrough(blocks, mesh.env)
    assert walk.returncode == 0, f"{walk.stderr}\n--- output:\n" + "\n".join(walk.outputs)
    assert len(walk.outputs) == len(blocks)
    assert all(walk.outputs), "every block prints what the gateway answered"

    replies = [reply for output in walk.outputs for reply in json_lines(output)]

    # the demo tenant (the seed's case A): the Kobe, then the order and its payment link
    demo = [
        reply
        for block, output in zip(blocks, walk.outputs, strict=True)
        if '"tenantId": "demo"' in block
        for reply in json_lines(output)
    ]
    assert demo and "Kobe" in demo[0]["responseText"], demo
    assert [a["type"] for a in demo[-1]["actions"]] == ["create_order", "payment_link"], demo
    products = catalogue_of(blocks)
    ids, names = {p["id"] for p in products}, [p["name"] for p in products]

    created = [r for r in replies if r.get("tenantId") == "bluebird" and "intents" in r]
    assert created and created[0]["name"]
    ingested = [r for r in replies if "upserted" in r]
    assert ingested and ingested[0]["rejected"] == 0
    assert ingested[0]["upserted"] + ingested[0]["unchanged"] == len(products)
    searched = [r for r in replies if "hits" in r]
    assert searched and searched[0]["hits"][0]["docId"] in ids

    # every answer to the new tenant's customer names a product of its catalogue
    chats = [
        output
        for block, output in zip(blocks, walk.outputs, strict=True)
        if "/process" in block and '"tenantId": "bluebird"' in block
    ]
    answers = [r for output in chats for r in json_lines(output)]
    assert answers, "the walk-through chats with the new tenant"
    for answer in answers:
        assert any(name in answer["responseText"] for name in names), answer

    (stream,) = [events for output in chats if (events := sse_events(output))]
    kinds = [kind for kind, _ in stream]
    assert kinds[-1] == "final" and set(kinds[:-1]) == {"delta"} and len(kinds) > 2
    final = stream[-1][1]
    assert "".join(data["text"] for _, data in stream[:-1]) == final["responseText"]
    assert any(name in final["responseText"] for name in names), final

    ordered = [a["params"] for r in answers for a in r["actions"] if a["type"] == "create_order"]
    assert any(order["productId"] in ids for order in ordered), answers

    # pasted again, it answers the same: every turn carries its correlationId (a replay)
    again = run_walkthrough(blocks, mesh.env)
    assert again.returncode == 0, again.stderr
    assert [r["responseText"] for r in demo + answers] == [
        r["responseText"]
        for block, output in zip(blocks, again.outputs, strict=True)
        if "/process" in block
        for r in json_lines(output)
    ]


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("working", "broken"),
    [
        (
            "--data-binary @examples/bluebird/catalogue.jsonl",
            "-d @examples/bluebird/catalogue.jsonl",
        ),
        ("--role tenant-admin", "--role agent"),
    ],
    ids=["catalogue-without-newlines", "agent-cannot-ingest"],
)
def test_a_broken_walkthrough_fails(mesh: Mesh, working: str, broken: str) -> None:
    readme = README.read_text()
    assert working in readme
    blocks = walkthrough_blocks(readme.replace(working, broken))
    walk = run_walkthrough(blocks, mesh.env)
    assert walk.returncode != 0
    assert "failed: curl" in walk.stderr and "/knowledge" in walk.stderr
    assert len(walk.outputs) < len(blocks)
