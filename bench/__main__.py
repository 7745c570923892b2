"""Entry point of ``python -m bench``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The harness forks servers and workers while gRPC threads run; it needs no fork support from gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements-bench.txt"


def ensure_requirements() -> None:
    """Install requirements-bench.txt when the etcd stubs or matplotlib are missing."""
    try:
        import aetcd  # type: ignore[import-untyped]  # noqa: F401
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"installing {REQUIREMENTS.name}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)], check=True, timeout=300
        )


if __name__ == "__main__":
    ensure_requirements()
    from bench.run import main

    sys.exit(main())
