"""Synthetic data sets: shapes, determinism, balance, where the glyph is, what the channels
carry, and that global statistics cannot read the class."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npcbam import data
from npcbam.data import TASKS, Dataset, load_task, make_what_task, make_where_task

MAKERS = {"where": make_where_task, "what": make_what_task}


def global_features(images: np.ndarray) -> np.ndarray:
    """(N, 3C): per-channel mean, max and std over the image, the statistics a classifier
    that ignores all spatial structure (and channel attention's pooled input) could use."""
    return np.concatenate([images.mean((2, 3)), images.max((2, 3)), images.std((2, 3))], axis=1)


def nearest_class_mean_accuracy(train_x, train_y, test_x, test_y, n_classes=4) -> float:
    """Fit class means of z-scored features on train; accuracy of the nearest mean on test."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-12
    train_z, test_z = (train_x - mean) / std, (test_x - mean) / std
    centres = np.stack([train_z[train_y == k].mean(0) for k in range(n_classes)])
    predicted = ((test_z[:, None, :] - centres) ** 2).sum(-1).argmin(1)
    return float((predicted == test_y).mean())


def grating_orientation(images: np.ndarray) -> np.ndarray:
    """(N, C): for each channel, the index of the "what" wave vector with the most power."""
    size = images.shape[-1]
    spectrum = np.abs(np.fft.fft2(images))  # (N, C, H, W)
    vectors = data._wave_vectors(size) % size  # (4, 2)
    return spectrum[..., vectors[:, 0], vectors[:, 1]].argmax(-1)


# --- shapes, dtypes, determinism ------------------------------------------------------------------


def test_where_shapes_and_dtypes():
    ds = make_where_task(10, image_size=20, channels=2, seed=3)
    assert ds.images.shape == (10, 2, 20, 20) and ds.images.dtype == np.float32
    assert ds.labels.shape == (10,) and ds.labels.dtype == np.int64
    assert ds.boxes.shape == (10, 4) and ds.boxes.dtype == np.int64
    assert ds.task == "where" and ds.informative_channels is None
    assert ds.class_names == ("plus", "cross", "tee", "ell")
    assert len(ds) == 10
    assert np.isfinite(ds.images).all()


def test_what_shapes_and_dtypes():
    ds = make_what_task(6, channels=5, n_informative=3, image_size=12, seed=1)
    assert ds.images.shape == (6, 5, 12, 12) and ds.images.dtype == np.float32
    assert ds.labels.shape == (6,) and ds.labels.dtype == np.int64
    assert ds.boxes is None and ds.task == "what"
    assert ds.class_names == ("horizontal", "vertical", "rising", "falling")
    assert len(ds.informative_channels) == 3
    assert list(ds.informative_channels) == sorted(set(ds.informative_channels))
    assert all(0 <= c < 5 for c in ds.informative_channels)


def test_defaults():
    where, what = make_where_task(4), make_what_task(4)
    assert where.images.shape == (4, 3, 24, 24)
    assert what.images.shape == (4, 16, 16, 16) and len(what.informative_channels) == 2


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_same_data(task):
    a, b = MAKERS[task](40, seed=7), MAKERS[task](40, seed=7)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    if task == "where":
        np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.informative_channels == b.informative_channels


@pytest.mark.parametrize("task", TASKS)
def test_different_seed_different_data(task):
    a, b = MAKERS[task](40, seed=7), MAKERS[task](40, seed=8)
    assert not np.array_equal(a.images, b.images)
    assert not np.array_equal(a.labels, b.labels)


def test_informative_channels_depend_on_the_seed():
    chosen = {make_what_task(1, seed=seed).informative_channels for seed in range(10)}
    assert len(chosen) > 5


@pytest.mark.parametrize("task", TASKS)
def test_load_task_streams(task):
    """The train set is make_<task>_task with the same seed; the test set is another draw
    (the what task's informative channels are shared)."""
    train, test = load_task(task, 30, 20, seed=5)
    single = MAKERS[task](30, seed=5)
    np.testing.assert_array_equal(train.images, single.images)
    np.testing.assert_array_equal(train.labels, single.labels)
    assert len(test) == 20
    assert train.informative_channels == test.informative_channels
    same_size_train, same_size_test = load_task(task, 20, 20, seed=5)
    assert not np.array_equal(same_size_train.images, same_size_test.images)
    assert load_task(task, 30, 20, seed=6)[0].images.tobytes() != train.images.tobytes()


def test_load_task_passes_options():
    train, test = load_task("what", 4, 4, seed=1, channels=6, n_informative=1, image_size=10)
    assert train.images.shape == (4, 6, 10, 10) == test.images.shape
    assert len(train.informative_channels) == 1


# --- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("n", [1, 2, 7, 8, 101])
def test_classes_are_balanced(task, n):
    counts = np.bincount(MAKERS[task](n, seed=2, **small(task)).labels, minlength=4)
    assert counts.sum() == n and counts.max() - counts.min() <= 1
    if n % 4 == 0:
        assert (counts == n // 4).all()


@pytest.mark.parametrize("task", TASKS)
def test_labels_are_shuffled(task):
    labels = MAKERS[task](100, **small(task)).labels
    assert not np.array_equal(labels, np.arange(100) % 4)
    assert not np.array_equal(labels, np.sort(labels))


def small(task):
    """Cheap options for tests that only look at labels."""
    return {"image_size": 8, "channels": 2, **({"n_informative": 1} if task == "what" else {})}


# --- where: the box and the glyph --------------------------------------------------------------


def test_boxes_lie_inside_the_image_and_cover_it():
    size = 24
    ds = make_where_task(2000, image_size=size, seed=1)
    top, left, bottom, right = ds.boxes.T
    assert (bottom - top == 5).all() and (right - left == 5).all()
    assert top.min() >= 0 and left.min() >= 0
    assert bottom.max() <= size and right.max() <= size
    # uniform over the 20 possible offsets: every one of them is used
    assert set(top) == set(range(size - 4)) and set(left) == set(range(size - 4))


def test_glyph_is_exactly_the_class_shape_inside_the_box():
    """Drawing the same scene without the glyph changes exactly the glyph's pixels: the mask of
    its class, at its box, in every channel; nothing outside the box."""
    n, cfg = 200, data._where_config()
    scene = data._where_scene(np.random.default_rng([4, 0]), n, cfg)
    with_glyph = data._render_where(scene)
    without = data._render_where(scene, draw_glyph=False)
    ds = make_where_task(n, seed=4)  # the public function draws the same scene
    np.testing.assert_array_equal(ds.images, data._standardise_where(with_glyph))
    changed = (with_glyph != without).all(axis=1)  # (N, H, W); glyph colours are >= 0.5
    for i in range(n):
        top, left, bottom, right = ds.boxes[i]
        expected = np.zeros_like(changed[i])
        expected[top:bottom, left:right] = data._GLYPHS[ds.labels[i]] > 0
        np.testing.assert_array_equal(changed[i], expected)
    assert ((with_glyph != without).any(axis=1) == changed).all()


def test_glyphs_are_distinct_and_equally_large():
    glyphs = data._GLYPHS.reshape(len(data._GLYPHS), -1)
    assert len({g.tobytes() for g in glyphs}) == len(glyphs)
    assert (glyphs.sum(1) == glyphs[0].sum()).all()
    # each fills its 5x5 box, so the box is tight
    assert (data._GLYPHS.any(axis=1).all(axis=1)).all() and (data._GLYPHS.any(2).all(1)).all()


def test_clutter_keeps_clear_of_the_glyph():
    """Without the glyph and the noise, the box grown by one pixel is empty, while clutter is
    drawn elsewhere."""
    cfg = data._where_config(noise=0.0)
    scene = data._where_scene(np.random.default_rng(0), 300, cfg)
    clutter_only = data._render_where(scene, draw_glyph=False)
    for i in range(300):
        t, q = scene.tops[i], scene.lefts[i]
        assert not clutter_only[i, :, max(t - 1, 0) : t + 6, max(q - 1, 0) : q + 6].any()
    assert (clutter_only.reshape(300, -1) > 0).sum(1).min() > 0


def test_where_global_statistics_are_at_chance():
    """A classifier on per-channel mean, max and std (nearest class mean, fitted on train)
    is at chance on test: the class is not in the pixel-value distribution."""
    train, test = load_task("where", 2000, 2000, seed=11)
    accuracy = nearest_class_mean_accuracy(
        global_features(train.images), train.labels, global_features(test.images), test.labels
    )
    assert accuracy < 0.35


def test_global_statistics_baseline_detects_a_leak():
    """Control for the test above: with glyphs of 1, 9, 17 and 25 pixels, the same classifier
    reads the class from the same statistics well above chance."""
    leaky = np.zeros_like(data._GLYPHS)
    for k, count in enumerate([1, 9, 17, 25]):
        leaky[k].flat[:count] = 1
    cfg = data._where_config()
    train = data._where_scene(np.random.default_rng(1), 1000, cfg)
    test = data._where_scene(np.random.default_rng(2), 1000, cfg)
    accuracy = nearest_class_mean_accuracy(
        global_features(data._render_where(train, leaky)),
        train.labels,
        global_features(data._render_where(test, leaky)),
        test.labels,
    )
    assert accuracy > 0.5


def test_where_values_are_standardised():
    x = make_where_task(500, seed=3).images
    assert abs(x.mean()) < 0.2 and 0.8 < x.std() < 1.25


# --- what: the channels ------------------------------------------------------------------------


def test_informative_channels_carry_the_class_and_others_do_not():
    ds = make_what_task(400, seed=2)
    orientation = grating_orientation(ds.images)  # (N, C)
    agreement = (orientation == ds.labels[:, None]).mean(0)  # per channel
    informative = np.zeros(16, bool)
    informative[list(ds.informative_channels)] = True
    assert agreement[informative].min() > 0.95
    assert agreement[~informative].max() < 0.4
    # distractor channels do hold gratings (just not the class's): same power, random direction
    power = np.abs(np.fft.fft2(ds.images)).max((2, 3)).mean(0)
    assert power[~informative].min() > 0.9 * power[informative].max()


def test_what_global_statistics_are_at_chance():
    train, test = load_task("what", 1000, 1000, seed=3)
    accuracy = nearest_class_mean_accuracy(
        global_features(train.images), train.labels, global_features(test.images), test.labels
    )
    assert accuracy < 0.35


@pytest.mark.parametrize("image_size", [8, 16, 21])
def test_noiseless_gratings_have_identical_global_statistics(image_size):
    """Without noise every channel of every image has mean exactly 0 and std exactly 1, and
    the same histogram whatever its orientation: no single channel's global statistic can
    tell the classes apart."""
    x = make_what_task(40, image_size=image_size, noise=0.0, seed=1).images.astype(np.float64)
    np.testing.assert_allclose(x.mean((2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(x.std((2, 3)), 1, atol=1e-5)


def test_wave_vectors_give_identical_histograms():
    """At one phase, the four orientations take the same multiset of values."""
    size = 16
    phases = np.full(4, 0.3)
    gratings = data._gratings(np.arange(4), phases, size).reshape(4, -1)
    sorted_values = np.sort(gratings, axis=1)
    np.testing.assert_allclose(
        sorted_values, np.broadcast_to(sorted_values[0], (4, size**2)), atol=1e-6
    )
    assert not np.allclose(gratings[0], gratings[1])


def test_stripe_directions_match_their_names():
    """horizontal: constant along rows; vertical: along columns; rising '/': along the
    anti-diagonal; falling '\\': along the diagonal."""
    g = data._gratings(np.arange(4), np.zeros(4), 16)
    horizontal, vertical, rising, falling = g
    assert np.allclose(horizontal, horizontal[:, :1]) and not np.allclose(
        horizontal, horizontal[:1]
    )
    assert np.allclose(vertical, vertical[:1]) and not np.allclose(vertical, vertical[:, :1])
    assert np.allclose(rising[1:, :-1], rising[:-1, 1:])  # x[r + 1, c] == x[r, c + 1]
    assert np.allclose(falling[1:, 1:], falling[:-1, :-1])  # x[r + 1, c + 1] == x[r, c]
    assert not np.allclose(rising[1:, 1:], rising[:-1, :-1])


def test_all_channels_informative():
    ds = make_what_task(40, channels=3, n_informative=3, seed=0)
    assert ds.informative_channels == (0, 1, 2)
    assert (grating_orientation(ds.images) == ds.labels[:, None]).mean() > 0.95


# --- any arguments -----------------------------------------------------------------------------


@given(
    n=st.integers(1, 12),
    size=st.integers(5, 14),
    channels=st.integers(1, 4),
    clutter=st.integers(0, 20),
    seed=st.integers(0, 2**32 - 1),
)
def test_where_invariants(n, size, channels, clutter, seed):
    ds = make_where_task(n, image_size=size, channels=channels, clutter=clutter, seed=seed)
    assert ds.images.shape == (n, channels, size, size) and np.isfinite(ds.images).all()
    assert (ds.boxes[:, :2] >= 0).all() and (ds.boxes[:, 2:] <= size).all()
    assert (ds.boxes[:, 2:] - ds.boxes[:, :2] == 5).all()
    counts = np.bincount(ds.labels, minlength=4)
    assert counts.max() - counts.min() <= 1


@given(
    n=st.integers(1, 12),
    size=st.integers(8, 14),
    channels=st.integers(1, 6),
    data_=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_what_invariants(n, size, channels, data_, seed):
    k = data_.draw(st.integers(1, channels))
    ds = make_what_task(n, channels=channels, n_informative=k, image_size=size, seed=seed)
    assert ds.images.shape == (n, channels, size, size) and np.isfinite(ds.images).all()
    assert len(ds.informative_channels) == k
    assert set(ds.informative_channels) <= set(range(channels))
    counts = np.bincount(ds.labels, minlength=4)
    assert counts.max() - counts.min() <= 1


# --- the Dataset object --------------------------------------------------------------------------


def test_batches_cover_every_sample_once():
    ds = make_where_task(10, image_size=8, seed=0)
    sizes, seen = [], []
    for images, labels in ds.batches(4):
        sizes.append(len(labels))
        seen.append(images)
        assert images.shape[1:] == (3, 8, 8) and labels.dtype == np.int64
    assert sizes == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(seen), ds.images)  # stored order


def test_batches_shuffle_with_an_rng():
    ds = make_what_task(12, image_size=8, channels=2, n_informative=1)
    first = np.concatenate([y for _, y in ds.batches(5, np.random.default_rng(1))])
    again = np.concatenate([y for _, y in ds.batches(5, np.random.default_rng(1))])
    other = next(x for x, _ in ds.batches(12, np.random.default_rng(2)))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(np.sort(first), np.sort(ds.labels))
    assert not np.array_equal(other, ds.images)
    order = np.random.default_rng(2).permutation(12)
    np.testing.assert_array_equal(other, ds.images[order])


def test_arrays_are_read_only():
    ds = make_where_task(2, image_size=8)
    for array in (ds.images, ds.labels, ds.boxes):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    with pytest.raises(AttributeError):
        ds.task = "what"


def test_repr_is_short():
    text = repr(make_what_task(3, image_size=8, channels=4, n_informative=1, seed=0))
    assert text.startswith("Dataset(task='what', n=3") and "informative_channels" in text
    assert len(text) < 200


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": np.zeros((2, 1, 4, 4))}, r"float32 array, got shape \(2, 1, 4, 4\)"),
        ({"labels": np.zeros(3, np.int64)}, r"shape \(2,\), got shape \(3,\)"),
        ({"labels": np.array([0, 4])}, r"labels must lie in \[0, 4\), got values from 0 to 4"),
        ({"boxes": np.zeros((2, 3), np.int64)}, r"shape \(2, 4\), got shape \(2, 3\)"),
        ({"task": "when"}, r"task must be one of \('where', 'what'\), got 'when'"),
    ],
)
def test_dataset_checks_its_fields(kwargs, message):
    fields = {
        "images": np.zeros((2, 1, 4, 4), np.float32),
        "labels": np.array([0, 3]),
        "boxes": None,
        "class_names": ("a", "b", "c", "d"),
        "task": "where",
        "informative_channels": None,
    }
    with pytest.raises(ValueError, match=message):
        Dataset(**{**fields, **kwargs})


# --- bad arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: make_where_task(0), ValueError, r"n_samples must be >= 1, got 0"),
        (lambda: make_where_task(2.0), TypeError, r"n_samples must be an integer, got 2.0"),
        (lambda: make_where_task(True), TypeError, r"n_samples must be an integer, got True"),
        (lambda: make_where_task(4, image_size=4), ValueError, r"image_size=4 is too small .*>= 5"),
        (lambda: make_where_task(4, channels=0), ValueError, r"channels must be >= 1, got 0"),
        (lambda: make_where_task(4, seed=-1), ValueError, r"seed must be >= 0, got -1"),
        (lambda: make_where_task(4, seed="0"), TypeError, r"seed must be an integer, got '0'"),
        (lambda: make_where_task(4, clutter=-1), ValueError, r"clutter must be >= 0, got -1"),
        (lambda: make_where_task(4, noise=-0.1), ValueError, r"noise must be .*>= 0, got -0.1"),
        (lambda: make_where_task(4, noise=float("nan")), ValueError, r"noise must be a finite"),
        (lambda: make_where_task(4, noise="0.1"), TypeError, r"noise must be a real number"),
        (lambda: make_what_task(0), ValueError, r"n_samples must be >= 1, got 0"),
        (lambda: make_what_task(4, channels=0), ValueError, r"channels must be >= 1, got 0"),
        (
            lambda: make_what_task(4, channels=3, n_informative=4),
            ValueError,
            r"n_informative=4 exceeds channels=3",
        ),
        (lambda: make_what_task(4, n_informative=0), ValueError, r"n_informative must be >= 1"),
        (lambda: make_what_task(4, image_size=7), ValueError, r"image_size=7 is too small.*>= 8"),
        (lambda: make_what_task(4, channels=2.5), TypeError, r"channels must be an integer"),
        (lambda: load_task("who", 4, 4), ValueError, r"unknown task 'who'; .*\('where', 'what'\)"),
        (lambda: load_task(None, 4, 4), TypeError, r"task must be a string"),
        (lambda: load_task("where", 0, 4), ValueError, r"n_train must be >= 1, got 0"),
        (lambda: load_task("what", 4, 0), ValueError, r"n_test must be >= 1, got 0"),
        (lambda: load_task("what", 4, 4, seed=1.5), TypeError, r"seed must be an integer"),
        (
            lambda: load_task("what", 4, 4, clutter=3),
            TypeError,
            r"unknown option\(s\) \['clutter'\]; the 'what' task takes channels, n_informative",
        ),
        (
            lambda: list(make_where_task(2, image_size=8).batches(0)),
            ValueError,
            r"batch_size must be >= 1, got 0",
        ),
        (
            lambda: list(make_where_task(2, image_size=8).batches(1, rng=3)),
            TypeError,
            r"rng must be a numpy Generator .* got int",
        ),
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()
