"""The ablation's runs in parallel worker processes (``--jobs``): the same results bit for bit as
one after the other, the grid's order in the tables and the JSON, and a clean stop when a run
fails or on Ctrl-C. Nothing is timed."""

import importlib
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from helpers import REPO, run_benchmark

TIMINGS = {"train_seconds", "train_seconds_mean", "wall_seconds"}


def without_timings(value):
    """``value`` (the JSON) without its times, the command line and the number of jobs."""
    if isinstance(value, dict):
        return {
            k: without_timings(v)
            for k, v in value.items()
            if k not in TIMINGS | {"command", "jobs"}
        }
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def progress_lines(stdout):
    """The per-run progress lines without their seconds, in the grid's order."""
    lines = [line for line in stdout.splitlines() if line.startswith("[")]
    return sorted(line.split("] ", 1)[1].rsplit(", ", 1)[0] for line in lines)


def run_quick(tmp_path, jobs):
    json_path, table_path = tmp_path / f"jobs{jobs}.json", tmp_path / f"jobs{jobs}.md"
    result = run_benchmark(
        "ablation.py",
        *("--quick", "--seeds", "2", "--jobs", str(jobs)),
        *("--json", str(json_path), "--markdown", str(table_path)),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(json_path.read_text()), table_path.read_text()


def test_two_jobs_give_the_runs_of_one_bit_for_bit(tmp_path):
    """Every run's accuracies and last-epoch loss (a float64 mean over the epoch: a change of
    rounding anywhere in training shows in it) are equal with one and two jobs, and the rows
    come in the same order."""
    stdout_1, sequential, table_1 = run_quick(tmp_path, 1)
    stdout_2, parallel, table_2 = run_quick(tmp_path, 2)
    assert (sequential["jobs"], parallel["jobs"]) == (1, 2)
    assert "2 at a time" in stdout_2 and "training runs at a time: 2." in table_2
    assert without_timings(parallel) == without_timings(sequential)
    losses = [
        run["train_loss"]
        for block in sequential["tasks"].values()
        for row in block["rows"]
        for run in row["runs"]
    ]
    assert len(set(losses)) == len(losses) == 12  # 2 tasks x 3 rows x 2 seeds, all different
    assert progress_lines(stdout_2) == progress_lines(stdout_1)

    def rows_without_seconds(table):  # the "train s" column is the last but one
        rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")]
        return [cells[:-2] + cells[-1:] for cells in rows]

    assert rows_without_seconds(table_2) == rows_without_seconds(table_1)


@pytest.fixture()
def ablation(monkeypatch):
    """benchmarks/ablation.py as a module (it sets the BLAS thread variables on import: they
    are restored afterwards)."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("ablation")


@pytest.mark.parametrize("n_workers", [1, 2])
def test_a_failing_run_stops_the_grid_and_is_named(ablation, n_workers):
    """A run that raises (here: a negative seed, refused by TrainConfig) stops everything with
    its name and traceback, in this process or in a worker's."""
    setup = ablation.QUICK_SETUP
    jobs = [ablation.Job(0, "what", "none", -1, setup), ablation.Job(1, "what", "se", -1, setup)]
    with pytest.raises(ablation.RunFailed, match=r"run what (none|se) seed -1 failed:") as error:
        list(ablation.run_jobs(jobs, n_workers))
    assert "Traceback" in str(error.value) and "seed must be" in str(error.value)


def test_ctrl_c_stops_the_workers_and_writes_nothing(tmp_path):
    """SIGINT to the script's process group (what Ctrl-C sends) after the first finished run:
    exit status 130, one line saying so, no results file."""
    json_path = tmp_path / "interrupted.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    script = REPO / "benchmarks" / "ablation.py"
    # four full-size runs (several seconds each), two at a time: the signal arrives while the
    # second pair trains. (Smoke runs take a few hundredths of a second: 120 of them finished
    # before the test had read the first line, and 2400 filled the pipe the test stops reading.)
    rows = ["--tasks", "where", "--rows", "none", "channel-avg", "--seeds", "2"]
    args = [*rows, "--jobs", "2", "--json", str(json_path)]
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # Ctrl-C's default action, even when this test runs where SIGINT is ignored (a
        # background job of a non-interactive shell passes SIG_IGN on, and Python then
        # installs no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in process.stdout:
            if re.match(r"\[\s*1/4\]", line):
                break
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()  # reap it and close the pipes (no ResourceWarning later)
    assert process.returncode == 130, stderr
    assert "ablation.py: interrupted: no results written" in stderr
    assert "Traceback" not in stderr
    assert not json_path.exists()
