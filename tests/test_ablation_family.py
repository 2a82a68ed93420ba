"""The ablation's rows of CBAM's family (SE, ECA, BAM), its multiply-add counts and the merging of
results files. No accuracy or timing is asserted (one epoch on 64 images measures nothing)."""

import json
import sys
from pathlib import Path

import pytest
from helpers import run_benchmark

from npcbam.nn.classifier import AttentionClassifier

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from model_cost import multiply_adds  # noqa: E402 (the benchmarks folder, just added)

FAMILY_ROWS = ["se", "eca", "bam"]


def run_script(*args):
    return run_benchmark("ablation.py", *args)


def conv(c_out, c_in, k, pixels):
    return c_out * c_in * k * k * pixels


# the classifier on "what" images (16 channels, 16x16): stem, block 0 (16 -> 16 at 16x16),
# block 1 (16 -> 32, stride 2, 8x8, with the 1x1 projection), head 32 -> 4
BASELINE_WHAT = (
    conv(16, 16, 3, 256)
    + 2 * conv(16, 16, 3, 256)
    + conv(32, 16, 3, 64)
    + conv(32, 32, 3, 64)
    + conv(32, 16, 1, 64)
    + 32 * 4
)


def test_multiply_adds_by_hand():
    """The baseline layer by layer; what each attention adds per image: SE's two dense layers
    (2 C C/r), ECA's k = 3 taps at every channel, CBAM's shared MLP twice and its 2 -> 1
    7x7 convolution at every pixel, BAM's two dense layers and its spatial branch's 1x1, two
    dilated 3x3 and 1x1 convolutions at every pixel (hidden width C/r = C/4)."""

    def count(attention, **options):
        model = AttentionClassifier(16, 4, attention=attention, attention_options=options)
        return multiply_adds(model, (16, 16, 16)) - BASELINE_WHAT

    assert count("none") == 0
    assert count("se") == 2 * 16 * 4 + 2 * 32 * 8
    assert count("eca") == 3 * 16 + 3 * 32
    cbam = 2 * (2 * 16 * 4 + 2 * 32 * 8) + 2 * 49 * (256 + 64)
    assert count("cbam", pool_types=("avg", "max")) == cbam
    bam = sum(
        2 * c * (c // 4) + pixels * (c * (c // 4) + 2 * 9 * (c // 4) ** 2 + c // 4)
        for c, pixels in ((16, 256), (32, 64))
    )
    assert count("bam") == bam


def test_a_layer_without_a_rule_is_refused():
    from npcbam.nn import ConvTranspose2d

    with pytest.raises(TypeError, match="no multiply-add rule for ConvTranspose2d"):
        multiply_adds(ConvTranspose2d(2, 2, 3), (2, 4, 4))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ablation")
    family, baseline = folder / "family.json", folder / "baseline.json"
    common = ["--quick", "--tasks", "what"]
    result = run_script(*common, "--rows", *FAMILY_ROWS, "--json", str(family))
    assert result.returncode == 0, result.stderr
    result = run_script(*common, "--rows", "none", "se", "--json", str(baseline))
    assert result.returncode == 0, result.stderr
    return folder, family, baseline


def read(path):
    return json.loads(path.read_text())


def test_family_rows_run_with_their_costs(quick):
    _, family, _ = quick
    rows = read(family)["tasks"]["what"]["rows"]
    assert [row["row"] for row in rows] == FAMILY_ROWS
    by_key = {row["row"]: row for row in rows}
    assert [by_key[k]["attention"] for k in FAMILY_ROWS] == FAMILY_ROWS
    assert by_key["se"]["paper_top1_error"] == 23.14
    assert by_key["eca"]["multiply_adds"] == BASELINE_WHAT + 3 * 16 + 3 * 32
    assert by_key["eca"]["parameters"] < by_key["se"]["parameters"] < by_key["bam"]["parameters"]


def test_merge_orders_and_replaces_rows_without_training(quick):
    folder, family, baseline = quick
    merged_path, table = folder / "merged.json", folder / "merged.md"
    result = run_script(
        "--merge",
        str(baseline),
        str(family),
        "--json",
        str(merged_path),
        "--markdown",
        str(table),
    )
    assert result.returncode == 0, result.stderr
    assert "seed 0: test accuracy" not in result.stdout  # nothing trained
    merged = json.loads(merged_path.read_text())
    rows = merged["tasks"]["what"]["rows"]
    assert [row["row"] for row in rows] == ["none", *FAMILY_ROWS]  # ROWS order
    assert rows[1] == read(family)["tasks"]["what"]["rows"][0]  # the later file's "se"
    assert merged["command"] == [read(baseline)["command"], read(family)["command"]]
    assert merged["wall_seconds"] == pytest.approx(
        read(baseline)["wall_seconds"] + read(family)["wall_seconds"]
    )
    assert "| 2 | se |" in table.read_text() and "| +144 |" in table.read_text()


def test_merge_adds_missing_multiply_adds_and_refuses_other_settings(quick):
    folder, family, baseline = quick
    old = read(baseline)
    for row in old["tasks"]["what"]["rows"]:
        del row["multiply_adds"]  # a file from before they were counted
    old_path, merged_path = folder / "old.json", folder / "old-merged.json"
    old_path.write_text(json.dumps(old))
    result = run_script("--merge", str(old_path), "--json", str(merged_path))
    assert result.returncode == 0, result.stderr
    (none, _) = json.loads(merged_path.read_text())["tasks"]["what"]["rows"]
    assert none["multiply_adds"] == BASELINE_WHAT
    other = read(family)
    other["tasks"]["what"]["train_config"]["epochs"] = 2
    other_path = folder / "other.json"
    other_path.write_text(json.dumps(other))
    result = run_script("--merge", str(baseline), str(other_path))
    assert result.returncode == 2 and "task 'what' has settings" in result.stderr
    assert "Traceback" not in result.stderr
