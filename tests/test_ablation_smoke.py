"""The ablation script runs (tiny data, one epoch) and writes complete JSON and markdown. No
accuracy or timing is asserted: one epoch on 64 images measures nothing."""

import json

import pytest
from helpers import run_benchmark

QUICK_ROWS = ["none", "channel-avgmax", "cbam-k7"]
ALL_ROWS = [
    "none",
    "channel-avg",
    "channel-max",
    "channel-avgmax",
    "cbam-k3",
    "cbam-k7",
    "cbam-conv-k7",
    "spatial-channel",
    "parallel",
]


def run_script(tmp_path, *args):
    paths = {name: tmp_path / f"ablation.{name}" for name in ("json", "md", "png")}
    result = run_benchmark(
        "ablation.py",
        "--quick",
        *args,
        "--json",
        str(paths["json"]),
        "--markdown",
        str(paths["md"]),
        "--figure",
        str(paths["png"]),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(paths["json"].read_text()), paths


def check_row(row, key, n_seeds):
    assert row["row"] == key and row["design"]
    assert [run["seed"] for run in row["runs"]] == list(range(n_seeds))
    for run in row["runs"]:
        assert 0 <= run["test_accuracy"] <= 1 and 0 <= run["train_accuracy"] <= 1
        assert run["train_seconds"] > 0 and run["parameters"] == row["parameters"]
    accuracies = [run["test_accuracy"] for run in row["runs"]]
    assert row["test_accuracy_mean"] == pytest.approx(sum(accuracies) / n_seeds)
    if n_seeds == 1:  # one seed has no spread: no std, "n/a" in the tables
        assert row["test_accuracy_std"] is None and row["train_accuracy_std"] is None
    else:
        assert row["test_accuracy_std"] >= 0 and row["train_accuracy_std"] >= 0
    assert row["parameters"] > 0 and row["train_seconds_mean"] > 0
    assert "paper_top1_error" in row and row["kernel_size"] in (3, 7)


def test_quick_ablation_one_seed(tmp_path):
    stdout, results, paths = run_script(tmp_path)
    assert results["quick"] is True and results["seeds"] == [0]
    assert list(results["tasks"]) == ["where", "what"]
    for block in results["tasks"].values():
        assert block["train_config"]["epochs"] == 1
        rows = block["rows"]
        assert [row["row"] for row in rows] == QUICK_ROWS
        for row in rows:
            check_row(row, row["row"], 1)
        baseline, channel, cbam = (row["parameters"] for row in rows)
        assert baseline < channel < cbam  # attention adds parameters
    table = paths["md"].read_text()
    assert table.count("### Task") == 2
    for key in QUICK_ROWS:
        assert f"| {key} |" in table
    assert table.count("| n/a |") == 2 * len(QUICK_ROWS)
    # the figure needs matplotlib, which npcbam does not depend on
    assert paths["png"].exists() or "matplotlib is not installed" in stdout
    assert "total: 6 runs" in stdout and "seed 0: test accuracy" in stdout


def test_quick_ablation_every_row_two_seeds(tmp_path):
    stdout, results, paths = run_script(
        tmp_path, "--seeds", "2", "--tasks", "what", "--rows", *ALL_ROWS
    )
    assert results["seeds"] == [0, 1] and list(results["tasks"]) == ["what"]
    rows = results["tasks"]["what"]["rows"]
    assert [row["row"] for row in rows] == ALL_ROWS
    for row in rows:
        check_row(row, row["row"], 2)
    by_key = {row["row"]: row for row in rows}
    assert by_key["none"]["paper_top1_error"] == 24.56
    assert by_key["cbam-k3"]["paper_top1_error"] is None
    assert by_key["parallel"]["attention_options"]["arrangement"] == "parallel"
    # the same modules in another order or arrangement: the same parameters
    assert by_key["cbam-k7"]["parameters"] == by_key["parallel"]["parameters"]
    assert by_key["cbam-k7"]["parameters"] == by_key["spatial-channel"]["parameters"]
    assert by_key["cbam-k3"]["parameters"] < by_key["cbam-k7"]["parameters"]
    table = paths["md"].read_text()
    assert "n/a" not in table
    for key in ALL_ROWS:
        assert f"| {key} |" in table
    assert "total: 18 runs" in stdout
