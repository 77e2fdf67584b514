"""Developer tooling that is neither shipped nor test-only: code generation
(`tools/gen_protos.py`) and the local stand-ins the tests and the benchmarks both start (a
telemetry receiver, a throwaway PostgreSQL database set up the way production is, free ports)."""
