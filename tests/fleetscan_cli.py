"""``fleetscan`` as a user runs it: a real subprocess, the developer's AWS settings left out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str | Path, env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``python -m fleetscan ARGS`` with this environment minus ``AWS_*``, plus ``env``; the
    timeout only guards against a hang (a test that hits it fails)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | env
    return subprocess.run(
        [sys.executable, "-m", "fleetscan", *map(str, args)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
