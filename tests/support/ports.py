"""Free local ports (tools/ports.py, shared with the benchmarks), under the name the test
modules import them by."""

from tools.ports import free_port, free_ports

__all__ = ["free_port", "free_ports"]
