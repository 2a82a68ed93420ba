"""The training-step benchmark runs (batches of 8) and writes complete JSON. No timing is
asserted: speed is measured by the benchmark itself, never by the test suite. With PyTorch
installed, the script's own check of the PyTorch twin (same loss, gradients and Adam step)
must pass, or the script exits with status 1."""

import json

from helpers import run_benchmark


def test_quick_train_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "train.json"
    result = run_benchmark("train_bench.py", "--quick", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    assert results["machine"]["threads"] >= 1
    assert [row["attention"] for row in results["steps"]] == ["cbam", "none"]
    with_torch = results["machine"]["torch"] is not None
    for row in results["steps"]:
        assert row["batch_size"] == 8 and row["npcbam_step_ms"] > 0
        assert set(row["npcbam_phases_ms"]) == {"forward", "backward", "optimizer"}
        assert (row["step_ratio"] is not None) == with_torch
        if with_torch:
            checks = row["check"]
            assert set(checks) == {"float64", "float32"}
            assert all(check["equal"] and check["compared"] > 30 for check in checks.values())
    assert "Training step of the demo classifier" in result.stdout
