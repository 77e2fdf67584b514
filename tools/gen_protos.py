"""Generate the one Python package of contracts (messages, gRPC stubs and type stubs).

    python tools/gen_protos.py            # protos/ -> gen/python/metaagent/...

Every service imports the same generated `metaagent.*` modules; nothing is copied per service.
"""

import os
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "gen" / "python"


def main() -> int:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    if not sources:
        print("no .proto files under protos/", file=sys.stderr)
        return 1
    staging = OUT.with_name("python.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    include = Path(protoc.__file__).parent / "_proto"
    # protoc finds the mypy plugins (protoc-gen-mypy, protoc-gen-mypy_grpc) on PATH.
    scripts = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={staging}",
        f"--grpc_python_out={staging}",
        f"--mypy_out={staging}",
        f"--mypy_grpc_out={staging}",
        *sources,
    ]
    if protoc.main(args) != 0:
        shutil.rmtree(staging, ignore_errors=True)
        return 1
    for folder in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    (staging / "metaagent" / "py.typed").touch()
    (staging / "__init__.py").unlink()
    shutil.rmtree(OUT, ignore_errors=True)
    staging.rename(OUT)
    print(f"generated {len(sources)} proto files into {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
