"""The command line never answers bad input with a traceback: one line naming the flag.

In-process through ``main`` (argparse's refusals end in ``SystemExit(2)``, the library's in a
return value of 2) and, for a few cases, as ``python -m npcbam``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import npcbam.train
from npcbam.cli import main

REPO = Path(__file__).resolve().parents[1]


def run_main(argv, capsys) -> tuple[int, str]:
    """main(argv)'s exit status (returned or raised) and its stderr."""
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    return status, capsys.readouterr().err


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def never(*args, **kwargs):
    raise AssertionError("reached: the arguments should have been refused before")


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["trace", "--shape", "2", "-3", "4", "4"], "--shape"),
        (["trace", "--shape", "0", "3", "4", "4"], "--shape"),
        (["trace", "--shape", "2", "3", "x", "4"], "--shape"),
        (["trace", "--shape", "100000", "100000", "100", "100"], "--shape"),
        (["trace", "--shape", "1", "10000000", "1", "1"], "--shape"),
        (["trace", "--shape", *["99999999999999999999"] * 4], "--shape"),
        (["trace", "--seed", "-1"], "--seed"),
        (["trace", "--reduction", "0"], "--reduction"),
        (["trace", "--reduction", "-4"], "--reduction"),
        (["trace", "--kernel-size", "4"], "--kernel-size"),
        (["trace", "--kernel-size", "-7"], "--kernel-size"),
        (["trace", "--dtype", "float16"], "--dtype"),
        (["gradcheck", "--seed", "-2"], "--seed"),
        (["gradcheck", "--seed", "1e3"], "--seed"),
        (["gradcheck", "--only", "nope"], "--only"),
        (["train", "--seed", "-1"], "--seed"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--lr", "inf"], "--lr"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--n-test", "-5"], "--n-test"),
        (["train", "--blas-threads", "-1"], "--blas-threads"),
        (["train", "--out", "no/such/directory/w.npz"], "--out"),
    ],
)
def test_bad_values_give_one_line_naming_the_flag(capsys, monkeypatch, argv, flag):
    monkeypatch.setattr(npcbam.train, "train_classifier", never)
    status, err = run_main(argv, capsys)
    assert status == 2
    assert "Traceback" not in err
    line = last_line(err)
    assert line.startswith(f"npcbam {argv[0]}: error: ") and flag in line, err


def test_train_out_in_a_missing_directory_fails_before_training(capsys, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(npcbam.train, "train_classifier", lambda *a, **k: calls.append(a))
    missing = tmp_path / "missing" / "w.npz"
    status, err = run_main(["train", "--out", str(missing)], capsys)
    assert status == 2 and calls == []
    assert f"the directory {missing.parent} does not exist" in last_line(err)
    # a directory given as --out is refused as well, with a file name to use instead
    status, err = run_main(["train", "--out", str(tmp_path)], capsys)
    assert status == 2 and calls == []
    assert "is a directory" in last_line(err) and "npcbam-where-cbam.npz" in last_line(err)


def test_trace_too_large_for_memory_is_refused_before_allocating(capsys, monkeypatch):
    """The estimate is compared with the available memory before any array is made."""
    import npcbam.nn

    monkeypatch.setattr(npcbam.nn, "CBAM", never)
    status, err = run_main(["trace", "--shape", "4096", "4096", "64", "64"], capsys)
    assert status == 2
    assert "GiB of memory" in last_line(err) and "choose a smaller --shape" in last_line(err)


@pytest.mark.parametrize(
    ("failure", "status", "message"),
    [
        (MemoryError(), 2, "not enough memory; choose a smaller --n-train"),
        (OSError(28, "No space left on device"), 2, "No space left on device"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_failures_during_a_run_are_one_line(
    capsys, monkeypatch, tmp_path, failure, status, message
):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(npcbam.train, "train_classifier", fail)
    got_status, err = run_main(["train", "--out", str(tmp_path / "w.npz")], capsys)
    assert got_status == status
    assert "Traceback" not in err and message in last_line(err)


@pytest.mark.parametrize(
    "argv",
    [
        ["trace", "--shape", "2", "-3", "4", "4"],
        ["trace", "--seed", "-1"],
        ["trace", "--shape", "100000", "100000", "100", "100"],
        ["train", "--out", "missing-directory/w.npz"],
    ],
)
def test_no_traceback_as_a_module(tmp_path, argv):
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    result = subprocess.run(
        [sys.executable, "-m", "npcbam", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"npcbam {argv[0]}: error: ")
