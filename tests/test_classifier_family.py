"""CBAM's family in the demo classifier and in ``npcbam train``: SE, ECA and BAM as the
attention of every block (options, small widths, a short run, saved and reloaded weights) and
finite differences through the whole classifier with each of them."""

import json

import numpy as np
import pytest
from helpers import distinct_values, seeds
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_networks_gradcheck import MODES, check_network

from npcbam import BAM, ECA, SE
from npcbam.cli import main
from npcbam.data import load_task
from npcbam.gradcheck import randomize_batchnorms
from npcbam.nn.classifier import AttentionClassifier
from npcbam.nn.residual import ATTENTIONS
from npcbam.train import TrainConfig, accuracy, train_classifier
from npcbam.weights import load_weights, save_weights

FAMILY = {"se": SE, "eca": ECA, "bam": BAM}
# "what" images: 16 channels, 16x16; the last batch of 20 holds 4 images
TINY = {"task": "what", "n_train": 20, "n_test": 12, "epochs": 1, "batch_size": 8}


def test_the_family_is_among_the_choices():
    assert set(FAMILY) < set(ATTENTIONS)


@pytest.mark.parametrize("attention", FAMILY)
def test_every_block_holds_the_module(attention):
    model = AttentionClassifier(16, 4, attention=attention, seed=0)
    for block, width in zip(model.blocks.layers, (16, 32)):
        assert type(block.attention) is FAMILY[attention]
        assert block.attention.channels == width
    assert any(key.startswith("blocks.1.attention.") for key in model.state_dict())


def test_default_widths_and_reduction():
    """r = 4 at widths (16, 32): SE and BAM get 4 and 8 hidden units, ECA the adaptive k = 3."""
    for attention, attribute, expected in [
        ("se", "hidden", [4, 8]),
        ("bam", "hidden", [4, 8]),
        ("eca", "kernel_size", [3, 3]),
    ]:
        model = AttentionClassifier(3, 4, attention=attention, seed=0)
        assert [getattr(b.attention, attribute) for b in model.blocks.layers] == expected


def test_se_clamps_its_hidden_width_and_takes_an_explicit_one():
    """widths 2 and 4 with r = 4: C // r is 0 and 1, SE keeps one hidden unit in both; CBAM,
    channel attention and BAM refuse the 0 by name."""
    model = AttentionClassifier(3, 4, widths=(2, 4), attention="se", reduction=4, seed=0)
    assert [b.attention.hidden for b in model.blocks.layers] == [1, 1]
    assert model.state_dict()["blocks.0.attention.fc1.weight"].shape == (1, 2, 1, 1)
    explicit = AttentionClassifier(
        3, 4, widths=(2, 4), attention="se", seed=0, attention_options={"hidden": 3}
    )
    assert [b.attention.hidden for b in explicit.blocks.layers] == [3, 3]
    for attention in ("bam", "cbam", "channel"):
        with pytest.raises(ValueError, match=r"widths\[0\] // reduction = 2 // 4 = 0"):
            AttentionClassifier(3, 4, widths=(2, 4), attention=attention, reduction=4)


def test_options_reach_the_modules():
    eca = AttentionClassifier(
        3, 4, widths=(8, 8), attention="eca", seed=0, attention_options={"eca_kernel_size": 5}
    )
    assert [b.attention.kernel_size for b in eca.blocks.layers] == [5, 5]
    bam = AttentionClassifier(
        3, 4, attention="bam", seed=0, attention_options={"gate": "official", "dilation": 2}
    )
    assert {(b.attention.gate, b.attention.dilation) for b in bam.blocks.layers} == {
        ("official", 2)
    }
    assert {b.attention.gate for b in AttentionClassifier(3, 4, attention="bam").blocks.layers} == {
        "paper"
    }


@pytest.mark.parametrize(
    ("attention", "options", "message"),
    [
        ("se", {"gate": "paper"}, r"attention='se' does not take option\(s\) \['gate'\]"),
        ("eca", {"hidden": 2}, r"attention='eca' does not take option\(s\) \['hidden'\]"),
        ("bam", {"pool_types": ("avg",)}, r"attention='bam' does not take option\(s\)"),
        ("eca", {"eca_kernel_size": 4}, r"kernel_size must be odd|kernel_size=4"),
        ("eca", {"eca_kernel_size": 33}, r"kernel_size=33 is larger than channels=16"),
        ("bam", {"gate": "sum"}, r"gate='sum'"),
    ],
)
def test_bad_options_are_refused_by_name(attention, options, message):
    with pytest.raises(ValueError, match=message):
        AttentionClassifier(3, 4, attention=attention, attention_options=options)


@pytest.mark.parametrize(
    ("batch_size", "n_train", "last"), [(1, 20, 1), (8, 17, 1), (8, 1, 1), (4, 9, 1)]
)
def test_bam_refuses_to_train_on_a_batch_of_one(batch_size, n_train, last):
    """BatchNorm1d has no batch statistics over one image: said before training starts, not
    after an epoch."""
    with pytest.raises(ValueError, match=rf"batch_size={batch_size}, n_train={n_train}: the "):
        TrainConfig(attention="bam", batch_size=batch_size, n_train=n_train)
    TrainConfig(attention="se", batch_size=batch_size, n_train=n_train)  # no BatchNorm1d
    TrainConfig(attention="bam", batch_size=8, n_train=18)  # last batch of 2


@pytest.mark.parametrize("attention", FAMILY)
def test_train_save_reload(attention, tmp_path):
    """Three Adam steps move the attention's weights; the saved weights, loaded into a fresh
    classifier of the same attention, give the same logits and accuracy; another attention's
    classifier refuses them."""
    config = TrainConfig(attention=attention, widths=(4, 8), reduction=2, **TINY)
    result = train_classifier(config, log=None)
    model = result.model
    initial = AttentionClassifier(16, 4, (4, 8), attention, reduction=2, seed=0).state_dict()
    moved = [
        key
        for key, value in model.parameters().items()
        if ".attention." in key and not np.array_equal(value, initial[key])
    ]
    assert moved  # the attention trained
    path = save_weights(model, tmp_path / f"{attention}.npz")
    fresh = AttentionClassifier(16, 4, (4, 8), attention, reduction=2, seed=9)
    load_weights(fresh, path)
    _, test_set = load_task("what", 1, TINY["n_test"], seed=0)
    with model.evaluating(), fresh.evaluating():
        logits = model.forward(test_set.images)
        np.testing.assert_array_equal(fresh.forward(test_set.images), logits)
    assert accuracy(fresh, test_set) == result.test_accuracy
    other = "eca" if attention != "eca" else "se"
    with pytest.raises(ValueError):
        load_weights(AttentionClassifier(16, 4, (4, 8), other, reduction=2), path)


@pytest.mark.parametrize("attention", FAMILY)
def test_cli_train(attention, capsys, tmp_path):
    """``npcbam train --attention se|eca|bam``: the run, its JSON and the saved weights."""
    out = tmp_path / "w.npz"
    argv = ["train", "--attention", attention, "--task", "what", "--n-train", "20"]
    argv += ["--n-test", "12", "--batch-size", "8", "--epochs", "1", "--json", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["attention"] == attention and summary["config"]["attention"] == attention
    model = AttentionClassifier(16, 4, attention=attention)
    load_weights(model, out)
    _, test_set = load_task("what", 1, 12, seed=0)
    assert accuracy(model, test_set) == summary["test_accuracy"]
    assert summary["parameters"] == sum(p.size for p in model.parameters().values())


def test_cli_train_bam_batch_of_one(capsys, tmp_path):
    out = tmp_path / "w.npz"
    argv = ["train", "--attention", "bam", "--n-train", "17", "--batch-size", "8"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "attention='bam' cannot train on a batch of one image" in err
    assert "Traceback" not in err and not out.exists()


KINDS = st.sampled_from([("se", {}), ("eca", {}), ("bam", {}), ("bam", {"gate": "official"})])


@settings(max_examples=8, deadline=None)
@given(kind=KINDS, mode=MODES, seed=seeds)
@example(kind=("se", {}), mode="train", seed=0)
@example(kind=("eca", {}), mode="eval", seed=1)
@example(kind=("bam", {}), mode="train", seed=2)
@example(kind=("bam", {"gate": "official"}), mode="eval", seed=3)
def test_classifier_gradients_with_the_family(kind, mode, seed):
    """The demo classifier with SE, ECA or BAM (both gate forms) in every block: sampled
    elements of the input and of every parameter, float64, train and eval mode (steep
    train-mode BatchNorm batches and kinks kept out by ``check_network``)."""
    attention, options = kind
    rng = np.random.default_rng(seed)
    module = AttentionClassifier(
        2, 3, widths=(4, 4), attention=attention, reduction=2, seed=rng, attention_options=options
    )
    randomize_batchnorms(module, rng)
    x = distinct_values(rng, (3, 2, 6, 6))
    report = check_network(module, x, mode, seed, mode="sample", n_samples=3)
    attention_parameters = {
        f"blocks.{k}.attention.{key}"
        for k, block in enumerate(module.blocks.layers)
        for key in block.attention.parameters()
    }
    assert attention_parameters <= {row.name for row in report.rows}  # every one compared
