"""``npcbam gradcheck`` says which installation it tests and runs checks by name; every flag of
the command line is described, and ``gradcheck --help`` explains the table's columns."""

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npcbam
import npcbam.nn.channel_attention as channel_module
from npcbam.cli import build_parser, main
from npcbam.selfcheck import check_names, run_checks

REPO = Path(__file__).resolve().parents[1]


def test_gradcheck_names_the_installation_it_tests(capsys):
    assert main(["gradcheck", "--only", "relu"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    package = Path(npcbam.__file__).resolve().parent
    assert first.startswith(f"Testing npcbam {npcbam.__version__} from {package} (")


def test_an_installed_copy_is_called_one(tmp_path):
    """A copy in a site-packages folder (what `pip install .` makes) is named as such, with
    the way to test one's edits: the false green of checking the wrong copy is visible."""
    site = tmp_path / "lib" / "site-packages"
    shutil.copytree(REPO / "npcbam", site / "npcbam", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "npcbam", "gradcheck", "--only", "sigmoid"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert f"from {(site / 'npcbam').resolve()} (an installed copy" in first
    assert "pip install -e ." in first


def test_only_runs_the_named_checks_with_the_same_inputs(capsys):
    assert main(["gradcheck", "--only", "relu", "CBAM", "--only", "conv2d_strided"]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 checks passed" in out
    assert re.findall(r"^\[(\w+)\]", out, flags=re.MULTILINE) == ["relu", "conv2d_strided", "CBAM"]
    # each selected check sees the inputs it sees in the full suite
    full = dict(run_checks(seed=0))
    for name, report in run_checks(seed=0, only=["relu", "CBAM"]):
        assert [row.max_abs_err for row in report.rows] == [
            row.max_abs_err for row in full[name].rows
        ]


def test_only_a_failing_check_exits_1_and_names_it(capsys, monkeypatch):
    monkeypatch.setattr(channel_module, "global_max_pool_backward", lambda d, c, add_to: add_to)
    assert main(["gradcheck", "--only", "ChannelAttention", "relu"]) == 1
    out = capsys.readouterr().out
    assert "1 of 2 checks passed" in out and "(--only ChannelAttention)" in out


def test_an_unknown_name_lists_the_valid_ones(capsys):
    assert main(["gradcheck", "--only", "relu", "Cbam"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran
    line = captured.err.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("npcbam gradcheck: error: --only: unknown check name 'Cbam';")
    assert line.endswith("valid names: " + ", ".join(check_names()))
    with pytest.raises(ValueError, match="unknown check name"):
        run_checks(only=["Cbam"])


def test_check_names_are_unique_and_cover_the_suite():
    names = check_names()
    assert len(names) == len(set(names)) >= 30  # every op and module of the suite
    assert all(re.fullmatch(r"\w+", name) for name in names)


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", ["gradcheck", "trace", "train"])
def test_every_flag_is_described(command):
    parser = subcommand_parsers()[command]
    assert parser.description
    for action in parser._actions:
        assert action.help and len(action.help) > 15, action.option_strings


def test_gradcheck_help_explains_every_column_of_the_table():
    help_text = subcommand_parsers()["gradcheck"].format_help()
    report = run_checks(only=["relu"])[0][1]
    header = str(report).splitlines()[2]  # title, settings, then the column names
    columns = [
        "tensor",
        "shape",
        "mode",
        "checked",
        "kinks",
        "max abs err",
        "max rel err",
        "where",
        "result",
    ]
    assert " ".join(header.split()) == " ".join(columns)  # a new column needs its help line
    for column in columns:  # each explained on its own line of the help
        assert re.search(rf"^\s+{column}\s{{2,}}\S", help_text, flags=re.MULTILINE), column
    assert "pip install -e ." in help_text


def test_train_help_and_readme_say_where_the_weights_go():
    help_text = " ".join(subcommand_parsers()["train"].format_help().split())
    assert "npcbam-<task>-<attention>.npz in the current directory" in help_text
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "npcbam-<task>-<attention>.npz` in the current directory" in readme


def test_trace_dtype_is_the_dtype_of_every_intermediate(capsys):
    assert (
        main(["trace", "--shape", "1", "4", "3", "3", "--reduction", "2", "--dtype", "float64"])
        == 0
    )
    rows = capsys.readouterr().out.splitlines()[4:]
    assert rows and all(row.split()[2] == np.dtype(np.float64).name for row in rows)
