"""Training the demo classifier: the configuration, one small run and what it reports,
determinism, and ``npcbam train`` (in-process and as ``python -m npcbam``)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npcbam.cli import main
from npcbam.data import Dataset, load_task
from npcbam.gradcam import box_mass_share, grad_cam, peak_in_box
from npcbam.nn.classifier import AttentionClassifier
from npcbam.nn.residual import ATTENTIONS
from npcbam.train import TrainConfig, TrainResult, accuracy, attention_in_box, train_classifier
from npcbam.weights import load_weights

REPO = Path(__file__).resolve().parents[1]

# small enough for a test suite; 24x24 "where" images and two blocks of widths (4, 8)
SMALL = TrainConfig(n_train=48, n_test=16, epochs=2, batch_size=24, widths=(4, 8))
RECORD_KEYS = {"epoch", "loss", "train_accuracy", "test_accuracy", "seconds"}
SUMMARY_KEYS = {
    "task",
    "attention",
    "test_accuracy",
    "train_accuracy",
    "train_seconds",
    "blas_threads",
    "attention_in_box",
    "attention_in_box_at_init",
    "parameters",
    "config",
    "history",
}
STAT_KEYS = {"mass_share", "peak_in_box"}


def box_keys(attention):
    keys = {"box_area", "grad_cam/blocks.0", "grad_cam/blocks.1"}
    if attention in ("cbam", "spatial"):
        keys |= {"spatial/blocks.0", "spatial/blocks.1"}
    return keys


# -- TrainConfig --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"epochs": 0}, ValueError, r"epochs must be >= 1, got 0"),
        ({"epochs": 1.5}, TypeError, r"epochs must be an integer"),
        ({"batch_size": 0}, ValueError, r"batch_size must be >= 1"),
        ({"n_train": 0}, ValueError, r"n_train must be >= 1"),
        ({"n_test": -3}, ValueError, r"n_test must be >= 1"),
        ({"seed": -1}, ValueError, r"seed must be >= 0"),
        ({"lr": 0}, ValueError, r"lr must be a positive finite number, got 0"),
        ({"lr": -1e-3}, ValueError, r"lr must be a positive finite number, got -0.001"),
        ({"lr": float("nan")}, ValueError, r"lr must be a positive finite number, got nan"),
        ({"lr": "0.1"}, ValueError, r"lr must be a positive finite number"),
        ({"task": "when"}, ValueError, r"task='when'; expected one of \('where', 'what'\)"),
        (
            {"attention": "self"},
            ValueError,
            r"attention='self'; expected one of \('cbam', 'channel', 'spatial', 'se', 'eca', "
            r"'bam', 'none'\)",
        ),
    ],
)
def test_config_validation(changes, error, message):
    with pytest.raises(error, match=message):
        TrainConfig(**changes)


@pytest.mark.parametrize(
    ("lr", "message"),
    [
        (float("inf"), r"lr must be a positive finite number, got inf"),
        (True, r"lr must be a positive finite number, got True"),
    ],
    ids=["inf", "bool"],
)
def test_config_rejects_infinite_or_bool_lr(lr, message):
    """inf would turn every weight into NaN after one Adam step; a bool is not a rate."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(lr=lr)


def test_config_accepts_numpy_scalars_as_lr():
    assert TrainConfig(lr=np.float32(0.01)).lr == pytest.approx(0.01)
    assert TrainConfig(lr=np.float64(0.5)).lr == 0.5


# -- one small run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run():
    lines = []
    result = train_classifier(SMALL, log=lines.append)
    return result, lines


def test_result_and_history(run):
    result, lines = run
    assert isinstance(result, TrainResult)
    assert result.config is SMALL
    assert [record["epoch"] for record in result.history] == [1, 2]
    for record in result.history:
        assert set(record) == RECORD_KEYS
        assert np.isfinite(record["loss"]) and record["loss"] > 0
        assert 0 <= record["train_accuracy"] <= 1 and 0 <= record["test_accuracy"] <= 1
        # accuracies are counts over the sets
        assert record["train_accuracy"] * SMALL.n_train == pytest.approx(
            round(record["train_accuracy"] * SMALL.n_train)
        )
        assert record["test_accuracy"] * SMALL.n_test == pytest.approx(
            round(record["test_accuracy"] * SMALL.n_test)
        )
    seconds = [record["seconds"] for record in result.history]
    assert 0 < seconds[0] <= seconds[1] <= result.train_seconds
    assert result.test_accuracy == result.history[-1]["test_accuracy"]
    # one line before training, one per epoch
    assert len(lines) == 1 + SMALL.epochs
    assert lines[1].startswith("epoch 1/2") and lines[2].startswith("epoch 2/2")


def test_test_accuracy_is_the_models(run):
    result, _ = run
    _, test_set = load_task(SMALL.task, SMALL.n_train, SMALL.n_test, seed=SMALL.seed)
    assert result.test_accuracy == accuracy(result.model, test_set)
    predictions = result.model.predict(test_set.images, batch_size=7)
    assert result.test_accuracy == np.mean(predictions == test_set.labels)


def test_summary_is_json(run):
    result, _ = run
    summary = result.summary()
    assert set(summary) == SUMMARY_KEYS
    decoded = json.loads(json.dumps(summary))
    assert decoded["config"] == {**dataclasses.asdict(SMALL), "widths": [4, 8]}
    assert decoded["history"] == result.history
    assert decoded["test_accuracy"] == result.test_accuracy
    assert decoded["train_accuracy"] == result.history[-1]["train_accuracy"]
    assert decoded["parameters"] == sum(p.size for p in result.model.parameters().values())
    assert decoded["attention_in_box"] == result.attention_in_box


def test_attention_in_box_of_the_run(run):
    result, _ = run
    for stats in (result.attention_in_box, result.attention_in_box_at_init):
        assert set(stats) == box_keys("cbam")
        assert stats["box_area"] == pytest.approx(25 / 576, rel=1e-12)  # a 5x5 glyph in 24x24
        for name in stats.keys() - {"box_area"}:
            assert set(stats[name]) == STAT_KEYS
            assert 0 <= stats[name]["mass_share"] <= 1
            assert 0 <= stats[name]["peak_in_box"] <= 1
    assert result.attention_in_box != result.attention_in_box_at_init  # training changed them


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_in_box_keys_and_batching(attention):
    """Spatial keys only where a spatial map exists; batches of 5 (the last one short) give
    the same means as one batch, and Grad-CAM's pointing game recomputed by hand agrees."""
    _, test_set = load_task("where", 1, 12, seed=3)
    model = AttentionClassifier(3, 4, widths=(4, 4), attention=attention, reduction=2, seed=1)
    state = model.state_dict()
    stats = attention_in_box(model, test_set, batch_size=5)
    assert model.training
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[name])
    assert set(stats) == box_keys(attention)
    whole = attention_in_box(model, test_set)
    assert whole.keys() == stats.keys()
    for name in stats.keys() - {"box_area"}:
        for key in STAT_KEYS:
            assert stats[name][key] == pytest.approx(whole[name][key], rel=1e-9, abs=1e-12)
    cam = grad_cam(model, test_set.images, test_set.labels, "blocks.1")
    hits = peak_in_box(cam, test_set.boxes)
    assert stats["grad_cam/blocks.1"]["peak_in_box"] == pytest.approx(hits.mean())


def test_attention_in_box_with_boxes_of_several_sizes():
    """box_area and the shares average over every image, whatever the batches."""
    _, test_set = load_task("where", 1, 7, seed=4)
    sizes = np.array([[0, 0, 24, 24], [2, 3, 7, 8], [0, 0, 1, 1], [10, 4, 22, 20]] * 2)[:7]
    varied = Dataset(
        images=test_set.images,
        labels=test_set.labels,
        boxes=sizes.astype(np.int64),
        class_names=test_set.class_names,
        task="where",
        informative_channels=None,
    )
    model = AttentionClassifier(3, 4, widths=(4, 4), reduction=2, seed=2)
    stats = attention_in_box(model, varied, batch_size=3)
    areas = (sizes[:, 2] - sizes[:, 0]) * (sizes[:, 3] - sizes[:, 1]) / 576
    assert stats["box_area"] == pytest.approx(areas.mean(), rel=1e-12)
    cam = grad_cam(model, varied.images, varied.labels, "blocks.0")
    share, _ = box_mass_share(cam, varied.boxes)
    assert stats["grad_cam/blocks.0"]["mass_share"] == pytest.approx(share.mean(), rel=1e-9)


def test_what_task_has_no_boxes_and_training_is_deterministic():
    config = TrainConfig(
        task="what", n_train=32, n_test=16, epochs=2, batch_size=16, widths=(4, 4), seed=5
    )
    first = train_classifier(config, log=None)
    second = train_classifier(config, log=None)
    assert first.attention_in_box is None and first.attention_in_box_at_init is None
    assert first.summary()["attention_in_box"] is None

    def without_time(history):
        return [{k: v for k, v in record.items() if k != "seconds"} for record in history]

    assert without_time(first.history) == without_time(second.history)
    assert first.test_accuracy == second.test_accuracy
    for name, value in first.model.state_dict().items():
        np.testing.assert_array_equal(second.model.state_dict()[name], value, err_msg=name)
    # another seed is another run
    other = train_classifier(dataclasses.replace(config, seed=6), log=None)
    assert without_time(other.history) != without_time(first.history)


def test_loss_decreases_and_the_last_epoch_is_reported():
    config = TrainConfig(
        task="what", n_train=64, n_test=16, epochs=3, batch_size=16, widths=(4, 8), seed=0
    )
    result = train_classifier(config, log=None)
    losses = [record["loss"] for record in result.history]
    assert losses[2] < losses[1] < losses[0], losses
    # the test accuracy moved between epochs here: the reported one is the final model's
    accuracies = [record["test_accuracy"] for record in result.history]
    assert len(set(accuracies)) > 1, accuracies
    _, test_set = load_task("what", 1, config.n_test, seed=config.seed)
    assert result.test_accuracy == accuracies[-1] == accuracy(result.model, test_set)


# -- npcbam train -------------------------------------------------------------------------------


def test_cli_train_json(capsys, tmp_path):
    out = tmp_path / "w.npz"
    argv = ["train", "--n-train", "32", "--n-test", "16", "--batch-size", "16", "--epochs", "1"]
    assert main([*argv, "--json", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads(lines[-1])
    assert isinstance(summary, dict)
    assert {"test_accuracy", "train_seconds", "attention_in_box"} <= set(summary)
    assert summary["weights"] == str(out) and out.is_file()
    assert set(summary["attention_in_box"]) == box_keys("cbam")
    assert summary["config"]["n_train"] == 32 and summary["config"]["epochs"] == 1
    assert any(line.startswith("epoch 1/1") for line in lines)
    # the saved weights reproduce the reported accuracy
    _, test_set = load_task("where", 1, 16, seed=0)
    model = AttentionClassifier(3, 4, widths=TrainConfig().widths)
    load_weights(model, out)
    assert accuracy(model, test_set) == summary["test_accuracy"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--epochs", "0", "argument --epochs: must be an integer >= 1, got 0"),
        ("--lr", "-1", "argument --lr: must be a finite number > 0, got -1"),
        ("--n-train", "0", "argument --n-train: must be an integer >= 1, got 0"),
    ],
)
def test_cli_train_bad_values(capsys, tmp_path, option, value, message):
    out = tmp_path / "w.npz"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", option, value, "--out", str(out)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--task", "when", "invalid choice: 'when'"),
        ("--attention", "self", "invalid choice: 'self'"),
        ("--epochs", "1.5", "invalid int value: '1.5'"),
    ],
)
def test_cli_train_bad_arguments(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", option, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_python_dash_m_train_json(tmp_path):
    out = tmp_path / "what.npz"
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "npcbam",
            "train",
            "--task",
            "what",
            "--n-train",
            "16",
            "--n-test",
            "8",
            "--batch-size",
            "8",
            "--epochs",
            "1",
            "--json",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["task"] == "what" and summary["attention_in_box"] is None
    assert 0 <= summary["test_accuracy"] <= 1 and summary["train_seconds"] > 0
    assert out.is_file() and summary["weights"] == str(out)
