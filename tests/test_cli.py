"""The command line: ``npcbam gradcheck`` and ``npcbam trace`` (in-process and as a module)."""

import subprocess
import sys

import npcbam.nn.channel_attention as channel_module
from npcbam.cli import main
from npcbam.trace import DESCRIPTIONS


def test_gradcheck_passes_and_prints_tables(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    assert "43 of 43 checks passed" in out
    assert "0 kink coordinates skipped" in out
    for name in (
        "input",
        "mlp.0.weight",
        "mlp.2.weight",
        "conv.weight",
        "shared_mlp_cbam_1.bias",
        "bn1.weight",
        "shortcut.1.bias",
        "in eval mode",
        "max rel err",
    ):
        assert name in out
    assert "FAIL" not in out


def test_gradcheck_exits_1_and_names_the_failure(capsys, monkeypatch):
    """A planted bug (max-pool path of dL/dx dropped) makes the command fail loudly."""
    monkeypatch.setattr(channel_module, "global_max_pool_backward", lambda d, c, add_to: add_to)
    assert main(["gradcheck"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: ChannelAttention" in out and "FAILED: CBAM" in out
    assert "FAILED: ConvCBAM" in out and "FAILED: ResidualBlockCBAM" in out


def test_trace_prints_every_pipeline_step(capsys):
    assert main(["trace", "--shape", "1", "8", "3", "4", "--reduction", "2"]) == 0
    out = capsys.readouterr().out
    for step in DESCRIPTIONS:
        assert step in out
    assert "(1,8,3,4)" in out and "(1,4)" in out  # x and the hidden layer


def test_trace_reports_bad_arguments_without_traceback(capsys):
    assert main(["trace", "--shape", "1", "4", "3", "3", "--reduction", "8"]) == 2
    err = capsys.readouterr().err
    assert "channels // reduction = 4 // 8 = 0" in err and "Traceback" not in err


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "npcbam",
            "trace",
            "--shape",
            "1",
            "4",
            "2",
            "2",
            "--reduction",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "spatial.spatial_map" in result.stdout
