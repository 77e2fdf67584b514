"""Shared runtime of the Meta-Agent mesh: settings, server bootstrap, interceptors, mTLS,
error mapping, JSON logs and typed clients. Every service and the gateway build on it."""
