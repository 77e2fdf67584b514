"""`make bench`: run every benchmark and print its report."""

import uvloop

from bench import context_sessions, retrieval_quality, telemetry, turns, vector_index


async def _all() -> None:
    await context_sessions.run()
    await retrieval_quality.run()
    await vector_index.run()
    await turns.run()
    await telemetry.run()


def main() -> None:
    uvloop.run(_all())


if __name__ == "__main__":
    main()
