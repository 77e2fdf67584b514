"""`metaagent` console entry point."""

import argparse
import json
import re
import sys

import uvloop

from cli.components import COMPONENTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metaagent", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("dev", help="run the whole mesh, each component as a supervised process")

    serve = commands.add_parser("serve", help="run one component in this process")
    serve.add_argument("component", choices=COMPONENTS)

    certs = commands.add_parser("certs", help="make the development CA and mesh certificates")
    certs.add_argument("--force", action="store_true", help="re-issue everything, CA included")

    token = commands.add_parser(
        "token", help="print a development JWT the local gateway accepts (not in production)"
    )
    token.add_argument(
        "--tenant", required=True, help="the tenant it acts for (a platform-admin acts for any)"
    )
    token.add_argument(
        "--role", default="user", choices=["user", "agent", "tenant-admin", "platform-admin"]
    )
    token.add_argument("--sub", default="dev-user", help="the subject (user id)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")

    migrate = commands.add_parser("migrate", help="apply the context store's migrations")
    migrate.add_argument(
        "--url",
        help="owner-role URL (default: CONTEXT_MIGRATIONS_URL, then CONTEXT_STORE_URL)",
    )

    audit = commands.add_parser("audit", help="the tamper-evident audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="check a tenant's hash chain")
    verify.add_argument("--tenant", required=True)
    verify.add_argument("--json", action="store_true", help="machine-readable output")

    status = commands.add_parser("status", help="each component's address and health")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    args = parser.parse_args(argv)
    if args.command == "dev":
        from cli.supervisor import Supervisor

        return uvloop.run(Supervisor.from_environment().run())
    if args.command == "serve":
        from cli.components import serve as serve_component

        try:
            uvloop.run(serve_component(args.component))
        except (OSError, ValueError) as error:
            print(f"metaagent serve {args.component}: {error}", file=sys.stderr)
            return 1
        return 0
    if args.command == "certs":
        return _certs(force=args.force)
    if args.command == "migrate":
        return _migrate(args.url)
    if args.command == "audit":
        return _audit_verify(args.tenant, as_json=args.json)
    if args.command == "token":
        return _token(args.tenant, args.role, args.sub, args.ttl)
    return _status(as_json=args.json)


def _certs(*, force: bool) -> int:
    from services.mesh.certs import ensure_dev_pki
    from services.mesh.settings import MeshSettings

    settings = MeshSettings()
    written = ensure_dev_pki(settings.certs_dir, force=force)
    print(f"certificates in {settings.certs_dir}: " + (", ".join(written) or "all current"))
    return 0


def _migrate(url: str | None) -> int:
    from services.context.settings import ContextSettings
    from services.context.store import open_store
    from services.mesh.errors import MeshError

    settings = ContextSettings()
    target = url or settings.migrations_url or settings.resolved_store_url()

    async def run() -> list[str]:
        if target.startswith("sqlite:"):
            store = open_store(target)
            await store.open()
            await store.close()
            return ["sqlite schema current"]
        from services.context.migrations.runner import migrate_postgres

        return await migrate_postgres(target)

    try:
        applied = uvloop.run(run())
    except (OSError, MeshError) as error:
        print(f"metaagent migrate: {error}", file=sys.stderr)
        return 1
    print("applied: " + (", ".join(applied) or "nothing, the schema is current"))
    return 0


def _audit_verify(tenant: str, *, as_json: bool) -> int:
    """Verify a tenant's chain straight from the store (CONTEXT_STORE_URL)."""
    from services.context.audit import AuditLog
    from services.context.settings import ContextSettings
    from services.context.store import open_store
    from services.mesh.errors import MeshError

    async def run() -> dict[str, object]:
        store = open_store(ContextSettings().resolved_store_url())
        await store.open()
        try:
            verdict = await AuditLog(store).verify(tenant)
        finally:
            await store.close()
        return {"tenant": tenant, **verdict.__dict__}

    try:
        report = uvloop.run(run())
    except MeshError as error:
        print(f"metaagent audit verify: {error}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(report, indent=2))
    elif report["valid"]:
        checked, head = report["entries_checked"], report["head_hash"]
        print(f"{tenant}: {checked} entries, chain intact (head {head})")
    else:
        print(
            f"{tenant}: BROKEN at sequence {report['first_invalid_sequence']}: {report['reason']}"
        )
    return 0 if report["valid"] else 1


def _token(tenant: str, role: str, subject: str, ttl: int) -> int:
    """A development token, signed with the dev JWT secret (`JWT_SECRET`, else the one the
    embedded profile keeps in the state directory). Never in production: tokens there come from
    the identity provider, and a command that mints any role for any tenant with the production
    key would be a way around it."""
    from pydantic import ValidationError

    from gateway.auth import issue_token
    from gateway.models import TENANT_PATTERN
    from gateway.settings import GatewaySettings
    from services.mesh.settings import MeshSettings

    if MeshSettings().production:
        print(
            "metaagent token: refused with METAAGENT_ENV=production (development tokens only)",
            file=sys.stderr,
        )
        return 1
    try:
        settings = GatewaySettings()
    except ValidationError as error:
        # the messages only: pydantic's own text quotes the input, secrets included
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        print(f"metaagent token: invalid settings: {reasons}", file=sys.stderr)
        return 1
    problems = []
    if not re.match(TENANT_PATTERN, tenant):
        problems.append(f"--tenant must match {TENANT_PATTERN}")
    if not subject.strip():
        problems.append("--sub must not be empty")
    if not 1 <= ttl <= settings.jwt_max_lifetime_seconds:
        problems.append(
            f"--ttl must be between 1 and {settings.jwt_max_lifetime_seconds} seconds "
            "(JWT_MAX_LIFETIME_SECONDS: the gateway refuses longer-lived tokens)"
        )
    if problems:
        print("metaagent token: " + "; ".join(problems), file=sys.stderr)
        return 2
    print(issue_token(settings, tenant_id=tenant, role=role, subject=subject, ttl=ttl))
    return 0


def _status(*, as_json: bool) -> int:
    from cli.status import collect
    from services.mesh.settings import MeshSettings

    report = uvloop.run(collect(MeshSettings()))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for row in report["components"]:
            print(f"{row['name']:<13} {row['address']:<28} {row['status']}")
    return 0 if report["healthy"] else 1


if __name__ == "__main__":
    sys.exit(main())
