"""Finding the gatehouse-devhub binary and a free port: shared by Tests/python (Azure's SDK over
MQTT) and Tests/python-amqp (qpid-proton over AMQP), which run under different Pythons."""

import os
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def find_binary() -> Path:
    configured = os.environ.get("GATEHOUSE_BIN")
    candidates = []
    if configured:
        path = Path(configured)
        candidates.append(path if path.is_file() else path / "gatehouse-devhub")
    else:
        try:
            bin_path = subprocess.run(
                ["swift", "build", "--show-bin-path"], cwd=REPO, capture_output=True, text=True, timeout=120
            ).stdout.strip()
            if bin_path:
                candidates.append(Path(bin_path) / "gatehouse-devhub")
        except (OSError, subprocess.TimeoutExpired) as error:
            print(f"cannot ask swift for the bin path: {error}")
        candidates.append(REPO / ".build" / "debug" / "gatehouse-devhub")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"gatehouse-devhub not found (looked at {', '.join(map(str, candidates))}); "
        "build it with `swift build --product gatehouse-devhub` or set GATEHOUSE_BIN"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
