"""The benchmark script runs (tiny shapes) and writes complete JSON. No timing is asserted:
speed is measured by the benchmark itself, never by the test suite."""

import json

from helpers import run_benchmark


def test_quick_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_benchmark("bench.py", "--quick", "--json", str(out))
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
