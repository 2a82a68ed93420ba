"""The benchmark script runs (tiny shapes) and writes complete JSON. No timing is asserted:
speed is measured by the benchmark itself, never by the test suite."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench.py"


def test_quick_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        check=False,
        # the package from this checkout, installed or not
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    assert results["machine"]["threads"] >= 1
    (cbam,) = results["cbam"]
    assert cbam["npcbam_step_ms"] > 0 and cbam["step_passes"] > 0
    assert cbam["peak_extra_memory_x_input"] > 0
    assert results["conv2d"] and results["teaching"]
    for row in results["teaching"]:
        assert row["speedup"] > 0
    assert "CBAM forward and forward+backward" in result.stdout
