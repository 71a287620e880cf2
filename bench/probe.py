"""Run a measuring process (``python -m bench.<module> ...``) and read the JSON it prints last."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def run_json(args: list[str], env: dict[str, str], what: str, log: Path | None = None) -> Any:
    """Run ``python -m <args>`` in the repository; return its last line as JSON.

    A failure raises RuntimeError with the process's stderr (and the end of *log*).
    """
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log is not None else ""
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def standalone(
    measure: Callable[[Any], Any],
    text: Callable[[Any], str],
    write: Callable[[Any, Path], None],
    docs: str | None,
) -> int:
    """Run one benchmark on its own: a throwaway MariaDB, *measure(stack)*, the table printed
    and, with *docs*, written into ``DIR/benchmarks.md``."""
    from bench.stack import Stack

    stack = Stack()
    try:
        print(f"starting MariaDB in {stack.base}", flush=True)
        stack.start_database()
        results = measure(stack)
    finally:
        stack.stop()
    print(text(results))
    if docs:
        write(results, Path(docs))
    return 0
