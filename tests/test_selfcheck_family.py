"""``npcbam gradcheck`` covers CBAM's family: SE, ECA, BatchNorm1d and BAM (both gate forms,
training and evaluation mode), ECA's channel convolution, the dilated convolution and BAM's
broadcast ops are listed, checked, selectable with ``--only``, and fail on planted bugs."""

import numpy as np

import npcbam.nn.conv as conv_layer_module
import npcbam.nn.eca as eca_module
import npcbam.ops
from npcbam.cli import main
from npcbam.exercises.catalogue.family import dilation_ignored
from npcbam.ops.conv import conv2d_backward
from npcbam.ops.im2col import col2im
from npcbam.selfcheck import check_names, run_checks

FAMILY_OPS = ["conv1d_channels", "conv2d_dilated", "broadcast_add", "broadcast_multiply"]
FAMILY_MODULES = ["SE", "ECA", "ECA_kernel5", "BatchNorm1d", "BatchNorm1d_eval"]
FAMILY_MODULES += ["BAM", "BAM_eval", "BAM_official", "BAM_official_eval"]


def test_the_family_is_listed_after_the_ops_and_modules_it_extends():
    names = check_names()
    assert names[names.index("softmax_cross_entropy") + 1 :][:4] == FAMILY_OPS
    assert names[-len(FAMILY_MODULES) :] == FAMILY_MODULES


def test_only_runs_the_family_rows(capsys):
    assert main(["gradcheck", "--only", "conv2d_dilated", "BAM_official_eval", "SE"]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 checks passed" in out and "0 kink coordinates skipped" in out
    assert "conv2d 3x2 dilation 2 stride 2 pad 0, bias" in out
    assert "in eval mode" in out and "gate_s_conv_di_1.weight" in out


def test_the_family_rows_check_what_they_name():
    """Modes and gate forms as the names say; every parameter and the input compared."""
    reports = dict(run_checks(only=["BAM", "BAM_official_eval", "BatchNorm1d", "ECA_kernel5"]))
    for report in reports.values():
        assert report.passed and report.kinks == 0, str(report)
        assert all(row.checked for row in report.rows)
    assert "eval mode" in str(reports["BAM_official_eval"])
    assert "eval mode" not in str(reports["BAM"])
    assert len(reports["BAM"].rows) == 21  # the input and the 20 parameters


def test_a_planted_kernel_gradient_bug_fails_eca_only(monkeypatch):
    """ECA's kernel gradient scaled by 1.01: both ECA rows fail, the op row (which calls the
    unpatched op) and SE pass."""
    backward = eca_module.conv1d_channels_backward

    def scaled(dout, cache):
        dv, dkernel = backward(dout, cache)
        return dv, 1.01 * dkernel

    monkeypatch.setattr(eca_module, "conv1d_channels_backward", scaled)
    results = {name: r.passed for name, r in run_checks(only=["ECA", "ECA_kernel5", "SE"])}
    assert results == {"ECA": False, "ECA_kernel5": False, "SE": True}


def test_col2im_ignoring_the_dilation_fails_the_dilated_rows(monkeypatch):
    """The classic dilated-backward bug, the exercise catalogue's: col2im folds the patches
    back with the dilation's windows but its taps side by side. Planted as a conv2d backward
    that computes x̄ = col2im(Wᵀ·Ḡ) with that col2im, into the op the check rows call and the
    one the Conv2d layers call: the dilated op row and BAM (whose 3x3 convolutions are dilated)
    fail; the undilated conv2d rows pass."""

    def planted(dout, cache):
        _, dweight, dbias = conv2d_backward(dout, cache)
        f = cache.weight.shape[0]
        dout_mat = dout.transpose(1, 0, 2, 3).reshape(f, -1)  # (N, F, Ho, Wo) -> (F, N*Ho*Wo)
        dcols = cache.weight.reshape(f, -1).T @ dout_mat  # (C*kh*kw, N*Ho*Wo)
        kernel, shape = cache.weight.shape[2:], cache.x.shape
        if cache.dilation == (1, 1):
            dx = col2im(dcols, shape, kernel, cache.stride, cache.padding)
        else:
            (sh, sw), (ph, pw), (dh, dw) = cache.stride, cache.padding, cache.dilation
            assert sh == sw and ph == pw and dh == dw  # the catalogue's form: one value a pair
            dx = dilation_ignored(dcols, shape, *kernel, sh, ph, dh)
        return dx, dweight, dbias

    monkeypatch.setattr(npcbam.ops, "conv2d_backward", planted)
    monkeypatch.setattr(conv_layer_module, "conv2d_backward", planted)
    only = ["conv2d", "conv2d_strided", "conv2d_dilated", "BAM", "BAM_official_eval"]
    results = {name: r.passed for name, r in run_checks(only=only)}
    assert results == {
        "conv2d": True,
        "conv2d_strided": True,
        "conv2d_dilated": False,
        "BAM": False,
        "BAM_official_eval": False,
    }


def test_broadcast_rows_see_both_operands_broadcast():
    ((_, report),) = run_checks(only=["broadcast_multiply"])
    assert [row.shape for row in report.rows] == [(2, 3, 1, 1), (2, 1, 4, 5)]
    assert all(row.checked == np.prod(row.shape) for row in report.rows) and report.passed
