"""Free local TCP ports, for the tests and the benchmarks."""

import socket
from contextlib import ExitStack


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: all held open while they are chosen, so the kernel cannot
    hand the same one out twice (consecutive `free_port()` calls sometimes do)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
