"""The tests' throwaway PostgreSQL database (tools/throwaway_postgres.py, shared with the
benchmarks), under the name the test modules import it by."""

from tools.throwaway_postgres import (
    APP_ROLE,
    OWNER_ROLE,
    RELAY_ROLE,
    ThrowawayDatabase,
    create_test_database,
    drop_test_database,
)

__all__ = [
    "APP_ROLE",
    "OWNER_ROLE",
    "RELAY_ROLE",
    "ThrowawayDatabase",
    "create_test_database",
    "drop_test_database",
]
