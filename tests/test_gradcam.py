"""Grad-CAM and the attention statistics: ``grad_cam`` against a computation by hand, the
state it must leave alone, nearest upsampling, the pointing game and the box mass share."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npcbam.gradcam import (
    attention_figure,
    box_mass_share,
    grad_cam,
    peak_in_box,
    upsample_nearest,
)
from npcbam.nn.classifier import AttentionClassifier
from npcbam.nn.residual import ATTENTIONS

# a tiny classifier: 3 input channels, 4 classes, two blocks of width 4 (the second at half
# resolution); images are 8x6 so that a swapped H and W shows
IMAGE_SHAPE = (3, 8, 6)
NUM_CLASSES = 4


def make_model(attention="cbam", seed=0):
    """A tiny classifier whose BatchNorm running statistics have moved away from (0, 1), so
    that evaluation mode differs from training mode."""
    rng = np.random.default_rng(seed)
    model = AttentionClassifier(
        IMAGE_SHAPE[0],
        NUM_CLASSES,
        widths=(4, 4),
        attention=attention,
        reduction=2,
        kernel_size=3,
        seed=rng,
    )
    model.train()
    for _ in range(3):
        model.forward(1.5 * rng.standard_normal((4, *IMAGE_SHAPE)) + 0.3)
    return model


@pytest.fixture
def model():
    return make_model()


@pytest.fixture
def images():
    return np.random.default_rng(7).standard_normal((3, *IMAGE_SHAPE))


# -- the reference: the network run by hand, alpha by finite differences --------------------

STAGES = ("stem", "blocks.0", "blocks.1")


def layer_output(model, x, layer):
    """Evaluation-mode output of ``layer`` (one of STAGES), running the submodules by hand."""
    a = model.stem.forward(x)
    for k in range(STAGES.index(layer)):
        a = model.blocks[k].forward(a)
    return a


def logits_from(model, a, layer):
    """The logits, given ``layer``'s output ``a``: the rest of the network by hand."""
    for k in range(STAGES.index(layer), len(STAGES) - 1):
        a = model.blocks[k].forward(a)
    pooled = a.mean(axis=(2, 3))
    weight, bias = model.head.parameters()["weight"], model.head.parameters()["bias"]
    return pooled @ weight.T + bias


def reference_cam(model, x, targets, layer, eps=1e-6):
    """Grad-CAM computed independently: alpha_k (the spatial mean of dz_t/dA_k) is the
    derivative of z_t along the all-ones direction of channel k divided by h*w, taken by a
    central difference (samples are independent in evaluation mode, so one perturbation serves
    every image); then relu(sum_k alpha_k A_k), nearest upsampling by np.repeat (the reduction
    factor is an integer), division by the maximum."""
    model.eval()
    a = layer_output(model, x, layer)  # (N, K, h, w)
    n, k, h, w = a.shape
    rows = np.arange(n)
    alpha = np.empty((n, k))
    for channel in range(k):
        step = np.zeros_like(a)
        step[:, channel] = eps
        plus = logits_from(model, a + step, layer)[rows, targets]
        minus = logits_from(model, a - step, layer)[rows, targets]
        alpha[:, channel] = (plus - minus) / (2 * eps) / (h * w)
    cam = np.maximum((alpha[:, :, None, None] * a).sum(axis=1), 0.0)  # (N, h, w)
    fh, fw = x.shape[2] // h, x.shape[3] // w
    assert (fh * h, fw * w) == x.shape[2:]
    cam = np.repeat(np.repeat(cam, fh, axis=1), fw, axis=2)
    return cam / cam.max(axis=(1, 2), keepdims=True), alpha


@pytest.mark.parametrize("layer", STAGES)
def test_grad_cam_matches_a_computation_by_hand(model, images, layer):
    targets = np.array([0, 3, 1])
    expected, _ = reference_cam(make_model(), images, targets, layer)
    # not a degenerate case: every map has a peak of 1 and some structure
    assert np.all(expected.max(axis=(1, 2)) == 1.0)
    assert np.all(expected.min(axis=(1, 2)) < 0.9)
    cam = grad_cam(model, images, targets, layer)
    assert cam.shape == (3, 8, 6) and cam.dtype == np.float64
    np.testing.assert_allclose(cam, expected, rtol=0, atol=1e-6)


def test_alpha_of_the_last_block_is_the_head_weight_over_hw(model, images):
    """Behind the last block come only the mean over h x w and the head, so dz_t/dA_kij =
    W_head[t, k] / (h w) exactly: a check of the reference itself."""
    targets = np.array([2, 2, 0])
    _, alpha = reference_cam(model, images, targets, "blocks.1")
    weight = model.head.parameters()["weight"]  # (classes, K)
    np.testing.assert_allclose(alpha, weight[targets] / (4 * 3), rtol=1e-7, atol=1e-10)


def test_target_class_int_and_array(model, images):
    """An int explains the same class in every image; an array one class per image, each
    image's map the same as when it is explained alone."""
    as_int = grad_cam(model, images, 2, "blocks.0")
    as_array = grad_cam(model, images, np.array([2, 2, 2]), "blocks.0")
    np.testing.assert_array_equal(as_int, as_array)
    np.testing.assert_array_equal(grad_cam(model, images, np.int64(2), "blocks.0"), as_int)
    mixed = grad_cam(model, images, np.array([0, 1, 3]), "blocks.0")
    for n, target in enumerate([0, 1, 3]):
        alone = grad_cam(model, images[n : n + 1], target, "blocks.0")
        np.testing.assert_allclose(mixed[n], alone[0], rtol=0, atol=1e-12)
    # the class matters: explaining another class gives another map
    assert not np.allclose(grad_cam(model, images, 0, "blocks.0"), as_int)


def snapshot(model):
    return {
        "state": model.state_dict(),
        "grads": {name: grad.copy() for name, grad in model.grads.items()},
        "modes": {path: module.training for path, module in model.named_modules()},
    }


def assert_same_state(model, before):
    after = snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["state"].keys() == before["state"].keys()
    for name, value in before["state"].items():
        np.testing.assert_array_equal(after["state"][name], value, err_msg=name)
        assert after["state"][name].dtype == value.dtype, name
    for name, value in before["grads"].items():
        np.testing.assert_array_equal(after["grads"][name], value, err_msg=name)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_grad_cam_leaves_the_model_as_it_was(model, images, training):
    """Mode (of every submodule), parameters, gradient buffers (here non-zero, as in the middle
    of an accumulation) and BatchNorm buffers are unchanged; no layer keeps retaining."""
    model.train(training)
    rng = np.random.default_rng(3)
    for grad in model.grads.values():
        grad[...] = rng.standard_normal(grad.shape)
    before = snapshot(model)
    cam = grad_cam(model, images, 1, "blocks.1")
    assert_same_state(model, before)
    for _, module in model.named_modules():
        with pytest.raises(RuntimeError, match="not retaining"):
            module.retained
    # the map is an evaluation-mode one whatever the mode
    model.train(not training)
    np.testing.assert_array_equal(grad_cam(model, images, 1, "blocks.1"), cam)


def test_bad_layer_path_lists_the_paths(model, images):
    before = snapshot(model)
    with pytest.raises(KeyError, match=r"no submodule 'blocks\.7'.*'blocks\.0'.*'stem'"):
        grad_cam(model, images, 0, "blocks.7")
    assert_same_state(model, before)


def test_layer_without_a_feature_map_is_refused(model, images):
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'head' outputs shape \(3, 4\); Grad-CAM needs"):
        grad_cam(model, images, 0, "head")
    assert_same_state(model, before)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (4, ValueError, r"target_class 4 is outside \[0, 4\)"),
        (-1, ValueError, r"target_class -1 is outside \[0, 4\)"),
        (np.array([0, 1, 9]), ValueError, r"outside \[0, 4\)"),
        (1.0, TypeError, r"target_class must be an int or \(N,\) ints, got 1.0"),
        (np.array([True, False, True]), TypeError, r"target_class must be an int"),
        ("1", TypeError, r"target_class must be an int"),
        (None, TypeError, r"target_class must be an int"),
    ],
    ids=["too-large", "negative", "array-too-large", "float", "bool", "str", "none"],
)
def test_bad_target_class(model, images, target, error, message):
    """A clear error naming target_class; mode and gradients are restored."""
    rng = np.random.default_rng(4)
    for grad in model.grads.values():
        grad[...] = rng.standard_normal(grad.shape)
    before = snapshot(model)
    with pytest.raises(error, match=message):
        grad_cam(model, images, target, "blocks.1")
    assert_same_state(model, before)


@pytest.mark.parametrize(
    ("target", "shape"),
    [(np.array([0, 1]), r"\(2,\)"), (np.array([[0], [1], [2]]), r"\(3, 1\)")],
    ids=["too-short", "2-D"],
)
def test_target_class_of_the_wrong_shape_is_named(model, images, target, shape):
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"target_class has shape {shape}; expected .*\(3,\)"):
        grad_cam(model, images, target, "blocks.1")
    assert_same_state(model, before)


def test_bad_images(model):
    with pytest.raises(TypeError, match="dtype int64"):
        grad_cam(model, np.zeros((1, *IMAGE_SHAPE), dtype=np.int64), 0, "blocks.0")
    with pytest.raises(ValueError, match="expected 4-D"):
        grad_cam(model, np.zeros(IMAGE_SHAPE), 0, "blocks.0")


# -- upsample_nearest ---------------------------------------------------------------------------

small_maps = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(0, 99))


@given(shape=small_maps, fh=st.integers(1, 4), fw=st.integers(1, 4))
def test_upsample_by_integer_factors_repeats_blocks(shape, fh, fw):
    n, h, w, seed = shape
    maps = np.random.default_rng(seed).random((n, h, w))
    up = upsample_nearest(maps, (h * fh, w * fw))
    np.testing.assert_array_equal(up, np.repeat(np.repeat(maps, fh, axis=1), fw, axis=2))


@given(
    shape=small_maps,
    fh=st.integers(1, 4),
    fw=st.integers(1, 4),
    box=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(1, 5), st.integers(1, 5)),
)
def test_upsample_by_integer_factors_keeps_mass_shares(shape, fh, fw, box):
    """A box on the block grid holds the same share of the mass before and after."""
    n, h, w, seed = shape
    top, left = min(box[0], h - 1), min(box[1], w - 1)
    bottom, right = min(max(box[2], top + 1), h), min(max(box[3], left + 1), w)
    maps = np.random.default_rng(seed).random((n, h, w))
    up = upsample_nearest(maps, (h * fh, w * fw))
    small = np.tile([top, left, bottom, right], (n, 1))
    large = np.tile([top * fh, left * fw, bottom * fh, right * fw], (n, 1))
    share, area = box_mass_share(maps, small)
    share_up, area_up = box_mass_share(up, large)
    np.testing.assert_allclose(share_up, share, rtol=1e-12)
    np.testing.assert_allclose(area_up, area, rtol=1e-12)
    np.testing.assert_allclose(up.sum(axis=(1, 2)), fh * fw * maps.sum(axis=(1, 2)), rtol=1e-12)


@given(shape=small_maps, size=st.tuples(st.integers(1, 9), st.integers(1, 9)))
def test_upsample_to_any_size_picks_input_pixels(shape, size):
    n, h, w, seed = shape
    maps = np.random.default_rng(seed).random((n, h, w))  # distinct values
    out = upsample_nearest(maps, size)
    assert out.shape == (n, *size)
    for k in range(n):
        assert set(out[k].ravel()) <= set(maps[k].ravel())
    np.testing.assert_array_equal(upsample_nearest(maps, (h, w)), maps)


def test_upsample_picks_the_nearest_pixel_when_shrinking():
    """6 -> 2 rows: output row i is centred on input row 3i + 1.5, which falls in row 3i + 1."""
    maps = np.arange(36.0).reshape(1, 6, 6)
    np.testing.assert_array_equal(upsample_nearest(maps, (2, 3))[0], [[7, 9, 11], [25, 27, 29]])


# -- the pointing game and the mass share --------------------------------------------------

H, W = 6, 8
BOX = (1, 2, 4, 5)  # rows 1..3, columns 2..4: 9 of 48 pixels


def boxes(*rows):
    return np.array(rows, dtype=np.int64)


def test_map_inside_the_box_only():
    maps = np.zeros((1, H, W))
    maps[0, 1:4, 2:5] = 1.0
    share, area = box_mass_share(maps, boxes(BOX))
    np.testing.assert_array_equal(share, [1.0])
    np.testing.assert_array_equal(area, [9 / 48])
    np.testing.assert_array_equal(peak_in_box(maps, boxes(BOX)), [True])
    # the complement: no mass inside, peak outside
    share, _ = box_mass_share(1.0 - maps, boxes(BOX))
    np.testing.assert_array_equal(share, [0.0])
    np.testing.assert_array_equal(peak_in_box(1.0 - maps, boxes(BOX)), [False])


def test_uniform_map_scores_the_box_area():
    maps = np.full((2, H, W), 0.3)
    share, area = box_mass_share(maps, boxes(BOX, (0, 0, H, W)))
    np.testing.assert_allclose(share, [9 / 48, 1.0], rtol=1e-12)
    np.testing.assert_allclose(area, [9 / 48, 1.0], rtol=1e-12)
    # ties: the first maximum in row-major order, (0, 0), is the peak
    hits = peak_in_box(maps, boxes(BOX, (0, 0, 1, 1)))
    np.testing.assert_array_equal(hits, [False, True])


@pytest.mark.parametrize(
    ("row", "col", "hit"),
    [
        (1, 2, True),  # top-left corner
        (3, 4, True),  # bottom-right corner, inside
        (4, 4, False),  # bottom is exclusive
        (3, 5, False),  # right is exclusive
        (0, 2, False),
        (1, 1, False),
    ],
)
def test_box_edges(row, col, hit):
    maps = np.zeros((1, H, W))
    maps[0, row, col] = 2.0
    np.testing.assert_array_equal(peak_in_box(maps, boxes(BOX)), [hit])
    share, _ = box_mass_share(maps, boxes(BOX))
    np.testing.assert_array_equal(share, [1.0 if hit else 0.0])


def test_first_of_two_equal_peaks_counts():
    maps = np.zeros((2, H, W))
    maps[0, 0, 7] = maps[0, 2, 3] = 1.0  # outside first (row 0), inside second
    maps[1, 2, 3] = maps[1, 5, 0] = 1.0  # inside first
    np.testing.assert_array_equal(peak_in_box(maps, boxes(BOX, BOX)), [False, True])
    share, _ = box_mass_share(maps, boxes(BOX, BOX))
    np.testing.assert_array_equal(share, [0.5, 0.5])


def test_all_zero_map_has_no_share_and_no_warning():
    share, area = box_mass_share(np.zeros((1, H, W)), boxes(BOX))
    np.testing.assert_array_equal(share, [0.0])
    np.testing.assert_array_equal(area, [9 / 48])


@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    data=st.data(),
)
def test_mass_share_and_peak_against_slicing(seed, n, h, w, data):
    rng = np.random.default_rng(seed)
    maps = rng.random((n, h, w))
    rows = []
    for _ in range(n):
        top = data.draw(st.integers(0, h - 1))
        left = data.draw(st.integers(0, w - 1))
        rows.append(
            (top, left, data.draw(st.integers(top + 1, h)), data.draw(st.integers(left + 1, w)))
        )
    share, area = box_mass_share(maps, boxes(*rows))
    hits = peak_in_box(maps, boxes(*rows))
    for k, (top, left, bottom, right) in enumerate(rows):
        inside = maps[k, top:bottom, left:right]
        assert share[k] == pytest.approx(inside.sum() / maps[k].sum(), rel=1e-12)
        assert area[k] == pytest.approx((bottom - top) * (right - left) / (h * w), rel=1e-12)
        i, j = np.unravel_index(maps[k].argmax(), (h, w))
        assert hits[k] == (top <= i < bottom and left <= j < right)


# -- attention_figure ---------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_figure_keys_and_shapes(attention, images):
    model = make_model(attention)
    model.train()
    before = snapshot(model)
    figure = attention_figure(model, images)
    assert_same_state(model, before)
    spatial = (
        {"spatial/blocks.0", "spatial/blocks.1"} if attention in ("cbam", "spatial") else set()
    )
    assert set(figure) == {"images", "predicted", "grad_cam"} | spatial
    np.testing.assert_array_equal(figure["images"], images)
    assert figure["predicted"].shape == (3,)
    np.testing.assert_array_equal(figure["predicted"], model.predict(images))
    assert figure["grad_cam"].shape == (3, 8, 6)
    np.testing.assert_array_equal(
        figure["grad_cam"], grad_cam(model, images, figure["predicted"], "blocks.1")
    )
    if spatial:
        model.eval()
        model.forward(images)
        maps = model.spatial_maps()
        np.testing.assert_array_equal(figure["spatial/blocks.0"], maps["blocks.0"][:, 0])
        np.testing.assert_array_equal(
            figure["spatial/blocks.1"],
            np.repeat(np.repeat(maps["blocks.1"][:, 0], 2, axis=1), 2, axis=2),
        )
        for key in spatial:
            assert figure[key].shape == (3, 8, 6)
            assert figure[key].dtype == np.float64
            assert np.all((figure[key] > 0) & (figure[key] < 1))


def test_attention_figure_with_class_and_layer(model, images):
    figure = attention_figure(model, images, target_class=3, layer="blocks.0")
    np.testing.assert_array_equal(figure["grad_cam"], grad_cam(model, images, 3, "blocks.0"))
