"""`make bench`: run every benchmark and print its report."""

import uvloop

from bench import context_sessions


def main() -> None:
    uvloop.run(context_sessions.run())


if __name__ == "__main__":
    main()
