"""What telemetry costs a turn, measured on the embedded mesh (bench/turns.py) in three modes:
tracing off; on, every trace recorded and exported over OTLP/HTTP to a local receiver in
batches, as production does; and on with one new trace in ten sampled
(OTEL_TRACES_SAMPLER_ARG=0.1). Metrics are counted in every mode (they are always on).

Two measures per mode: p50 turn latency from a few concurrent clients, and CPU time per turn
(the process's, the exporter's thread included), which the other work on this shared machine
disturbs less. The mesh restarts for each run and the modes take turns, so drift falls on all of
them; a mode's figure is the median over its runs. The goal is at most 10 % added at p50; it is
reported, not asserted.
"""

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.turns import MESH_PATH, embedded_mesh, measure
from services.mesh import tracing
from services.mesh.settings import MeshSettings
from tools.telemetry_sink import telemetry_sink

ROUNDS, WARMUP, TURNS, CONCURRENCY = 5, 60, 400, 4
GOAL = 0.10
MODES = {"off": (False, 1.0), "on": (True, 1.0), "on, 10 %": (True, 0.1)}
"""mode -> (traced, the share of new traces sampled)"""


@dataclass(frozen=True)
class Sample:
    p50_ms: float
    cpu_ms_per_turn: float


async def _one_run(directory: Path, sink_url: str | None, ratio: float) -> Sample:
    if sink_url is not None:
        settings = MeshSettings(otlp_endpoint=sink_url, otel_sample_ratio=ratio)
        tracing.configure_tracing("bench", settings)
    try:
        async with embedded_mesh(directory) as app:
            headers = {"Authorization": f"Bearer {app.state.bench_token}"}
            await measure(app, MESH_PATH, headers, WARMUP, 0, CONCURRENCY)
            cpu = time.process_time()
            run = await measure(app, MESH_PATH, headers, 0, TURNS, CONCURRENCY)
            provider = tracing.provider()
            if provider is not None:
                provider.force_flush()  # the export of these turns' spans is their cost too
            cpu = time.process_time() - cpu
        return Sample(run.p50, cpu / len(run.latencies_ms) * 1000)
    finally:
        tracing.shutdown_tracing()


async def run() -> None:
    samples: dict[str, list[Sample]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as directory, telemetry_sink() as sink:
        for number in range(ROUNDS):
            for mode, (traced, ratio) in MODES.items():
                url = sink.url if traced else None
                where = Path(directory) / f"{number}-{len(samples[mode])}-{ratio}-{traced}"
                samples[mode].append(await _one_run(where, url, ratio))
        exported = len(sink.spans)
    p50 = {m: statistics.median(s.p50_ms for s in found) for m, found in samples.items()}
    cpu = {m: statistics.median(s.cpu_ms_per_turn for s in found) for m, found in samples.items()}
    print(
        f"telemetry: {ROUNDS} rounds of each mode, {TURNS} turns after {WARMUP} warm-up from "
        f"{CONCURRENCY} concurrent clients; spans exported over OTLP/HTTP to a local receiver"
    )
    for mode, found in samples.items():
        runs = ", ".join(f"{s.p50_ms:.1f}" for s in found)
        print(
            f"  tracing {mode:<9} p50 {p50[mode]:6.2f} ms ({p50[mode] / p50['off'] - 1:+6.1%})  "
            f"cpu {cpu[mode]:5.2f} ms/turn ({cpu[mode] / cpu['off'] - 1:+6.1%})  "
            f"p50 per run: {runs}"
        )
    print(f"  spans exported: {exported}")
    for mode in ("on", "on, 10 %"):
        added = p50[mode] / p50["off"] - 1
        verdict = "met" if added <= GOAL else "not met"
        print(f"goal: <= {GOAL:.0%} added at p50, tracing {mode} -> {added:+.1%} ({verdict})")
