"""The attention statistics of ``npcbam train`` (``attention_in_box``): their values against a
straightforward per-image computation with the classifier's whole backward (what they were
before Grad-CAM's backward stopped at the first block and the batches shrank), and the CLI's
``--no-attention-stats``."""

import json
import re

import numpy as np
import pytest
from helpers import EXACT

from npcbam.cli import main
from npcbam.data import load_task
from npcbam.nn.classifier import AttentionClassifier
from npcbam.train import attention_in_box


def upsample(maps, size):
    """(h, w) -> size by repeating pixels (the classifier's maps divide the image evenly)."""
    fh, fw = size[0] // maps.shape[0], size[1] // maps.shape[1]
    assert (fh * maps.shape[0], fw * maps.shape[1]) == size
    return np.repeat(np.repeat(maps, fh, axis=0), fw, axis=1)


def per_image_statistics(model, dataset):
    """attention_in_box, one image at a time: a forward and the model's whole backward of the
    true class's logit, each block's Grad-CAM relu(sum_k alpha_k A_k) with alpha_k the spatial
    mean of the output gradient, each spatial map; every map's share of mass in the box and
    whether its first maximum lies in the box, then the means over the images."""
    blocks = [f"blocks.{k}" for k in range(len(model.blocks))]
    shares, hits, areas = {}, {}, []
    for block in model.blocks.layers:
        block.retain_io(True)
    try:
        with model.evaluating():
            for image, label, box in zip(dataset.images, dataset.labels, dataset.boxes):
                x = image[None].astype(np.float64)  # (1, C, H, W)
                logits = model.forward(x)
                dlogits = np.zeros_like(logits)
                dlogits[0, label] = 1.0
                model.backward(dlogits)  # every layer's backward, down to the image
                maps = {}
                for path, block in zip(blocks, model.blocks.layers):
                    a, da = block.retained["output"][0], block.retained["output_grad"][0]
                    cam = np.maximum((da.mean(axis=(1, 2))[:, None, None] * a).sum(axis=0), 0)
                    cam = upsample(cam, x.shape[2:])
                    maps[f"grad_cam/{path}"] = cam / cam.max() if cam.max() > 0 else cam
                for path, spatial in model.spatial_maps().items():
                    maps[f"spatial/{path}"] = upsample(spatial[0, 0], x.shape[2:])
                top, left, bottom, right = box
                inside = np.zeros(x.shape[2:], dtype=bool)
                inside[top:bottom, left:right] = True
                areas.append(inside.mean())
                for name, m in maps.items():
                    share = m[inside].sum() / m.sum() if m.sum() > 0 else 0.0  # all-zero CAM
                    shares.setdefault(name, []).append(share)
                    peak = np.unravel_index(np.argmax(m), m.shape)
                    hits.setdefault(name, []).append(bool(inside[peak]))
    finally:
        for block in model.blocks.layers:
            block.retain_io(False)
    model.zero_grad()
    return areas, shares, hits


@pytest.mark.parametrize("attention", ["cbam", "none"])
@pytest.mark.parametrize("batch_size", [None, 7])
def test_statistics_equal_a_per_image_computation(attention, batch_size):
    """Seeded "where" images and a seeded model, at init and after a few hand-made changes to
    its weights (so that maps are not those of a fresh init): the same means, the pointing
    game exactly, the mass shares to float64 rounding (EXACT), for the default batches and
    for batches of 7 (the last one short)."""
    _, test_set = load_task("where", 1, 30, seed=5)
    model = AttentionClassifier(3, 4, widths=(8, 16), attention=attention, seed=3)
    rng = np.random.default_rng(11)
    for value in model.parameters().values():  # away from the initialisation
        value += 0.1 * rng.standard_normal(value.shape)
    options = {} if batch_size is None else {"batch_size": batch_size}
    stats = attention_in_box(model, test_set, **options)
    areas, shares, hits = per_image_statistics(model, test_set)
    assert stats["box_area"] == pytest.approx(np.mean(areas), rel=1e-15)
    assert set(stats) - {"box_area"} == set(shares)
    for name in shares:
        assert stats[name]["peak_in_box"] == np.mean(hits[name]), name
        np.testing.assert_allclose(stats[name]["mass_share"], np.mean(shares[name]), **EXACT)
    # not a degenerate case: the maps differ between blocks and from a uniform map
    grad_cam_shares = [stats[f"grad_cam/blocks.{k}"]["mass_share"] for k in (0, 1)]
    assert grad_cam_shares[0] != grad_cam_shares[1]
    assert all(abs(share - stats["box_area"]) > 1e-3 for share in grad_cam_shares)


TINY = ["--n-train", "32", "--n-test", "16", "--batch-size", "16", "--epochs", "1", "--json"]


def run_train(capsys, tmp_path, *switch):
    assert main(["train", *TINY, "--out", str(tmp_path / "w.npz"), *switch]) == 0
    out = capsys.readouterr().out
    return out, json.loads(out.splitlines()[-1])


def test_cli_no_attention_stats(capsys, tmp_path):
    """``--no-attention-stats`` leaves the statistics out of the JSON (null) and the printout;
    the training is the same."""
    out, summary = run_train(capsys, tmp_path)
    assert summary["config"]["attention_stats"] is True
    assert summary["attention_in_box"]["grad_cam/blocks.0"]["peak_in_box"] >= 0
    assert summary["attention_in_box_at_init"]["spatial/blocks.0"]["mass_share"] > 0
    assert "attention on the object's box" in out
    out, without = run_train(capsys, tmp_path, "--no-attention-stats")
    assert without["config"]["attention_stats"] is False
    assert without["attention_in_box"] is None and without["attention_in_box_at_init"] is None
    assert "attention on the object's box" not in out

    def losses(result):
        return [(record["loss"], record["test_accuracy"]) for record in result["history"]]

    assert losses(without) == losses(summary)


def test_cli_help_states_what_the_statistics_cost(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--no-attention-stats" in help_text
    assert "Grad-CAM and spatial maps on the test set" in help_text
    assert re.search(r"took about [\d.]+ s of the [\d.]+ s of npcbam train", help_text)
