"""How long ``npcbam grade`` takes on the whole course: the instructor solutions (every exercise
passes, so every check runs to the end, finite differences included) and the fresh student
notebooks.

Usage::

    python benchmarks/grading.py                  # prints the times
    python benchmarks/grading.py --json out.json  # ... and writes them as JSON

Each run is the command as a teacher types it (``npcbam grade DIR/*.ipynb``), in a fresh
interpreter, timed from outside; the notebooks are written by ``npcbam exercises start``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def time_grading(directory: Path) -> tuple[float, str]:
    """Seconds of ``npcbam grade directory/*.ipynb``, and its last line."""
    notebooks = sorted(str(path) for path in directory.glob("*.ipynb"))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "npcbam", "grade", *notebooks],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - start, result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the times to this file")
    args = parser.parse_args()
    times = {}
    with tempfile.TemporaryDirectory() as root:
        for kind, flags in [("solutions", ["--solutions"]), ("student", [])]:
            directory = Path(root) / kind
            subprocess.run(
                [sys.executable, "-m", "npcbam", "exercises", "start", str(directory), *flags],
                capture_output=True,
                check=True,
            )
            seconds, last = time_grading(directory)
            times[kind] = {"seconds": round(seconds, 2), "result": last}
            print(f"{kind:>9} notebooks: {seconds:5.1f} s  ({last})")
    if args.json:
        Path(args.json).write_text(json.dumps(times, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
