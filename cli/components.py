"""How each component of the mesh is started in the current process."""

import importlib

from services.mesh import identity

COMPONENTS = (*identity.GRPC_SERVICES, identity.GATEWAY)


async def serve(component: str) -> None:
    """Run `component` until SIGTERM/SIGINT; each service module exposes `serve()`."""
    if component not in COMPONENTS:
        raise SystemExit(f"unknown component '{component}'; choose one of {', '.join(COMPONENTS)}")
    module = importlib.import_module(
        "gateway.app" if component == identity.GATEWAY else f"services.{component}.app"
    )
    await module.serve()
