"""``save_weights`` / ``load_weights``: a lossless ``.npz`` round trip that never unpickles,
and loads that either succeed whole or change nothing."""

import numpy as np
import pytest

from npcbam.nn import ResnetFPN4CBAM
from npcbam.nn.classifier import AttentionClassifier
from npcbam.weights import load_weights, save_weights

# set when (and only if) an archive's pickled object is ever rebuilt
UNPICKLED = []


def record_unpickling(value):
    UNPICKLED.append(value)
    return value


class Trap:
    """Pickles as a call to record_unpickling: loading it would leave a trace."""

    def __reduce__(self):
        return (record_unpickling, ("trap",))


def classifier(seed):
    return AttentionClassifier(3, 4, widths=(4, 8), reduction=2, kernel_size=3, seed=seed)


def fpn(seed):
    return ResnetFPN4CBAM(4, reduction=4, kernel_size=3, seed=seed)


NETWORKS = {
    "classifier": (classifier, (2, 3, 8, 8)),
    "fpn": (fpn, (2, 4, 8, 8)),
}


def trained(build, shape, seed=0):
    """A network whose parameters and buffers all differ from a fresh one's: random parameter
    noise, and a few training-mode forwards (running statistics, num_batches_tracked = 3)."""
    rng = np.random.default_rng(seed + 100)
    module = build(seed)
    for value in module.parameters().values():
        value += 0.1 * rng.standard_normal(value.shape)
    module.train()
    for _ in range(3):
        module.forward(rng.standard_normal(shape) + 0.5)
    return module


def assert_state_equal(actual, expected):
    assert list(actual) == list(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        assert actual[name].shape == value.shape, name
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


@pytest.mark.parametrize("network", NETWORKS)
def test_round_trip(tmp_path, network):
    build, shape = NETWORKS[network]
    source = trained(build, shape)
    state = source.state_dict()
    counters = [name for name in state if name.endswith("num_batches_tracked")]
    assert counters and all(state[name].dtype == np.int64 and state[name] == 3 for name in counters)
    path = save_weights(source, tmp_path / "weights.npz")
    assert path == tmp_path / "weights.npz" and path.is_file()
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(state)
        assert all(archive[name].dtype == np.int64 for name in counters)

    target = build(seed=1)  # other weights
    assert any(not np.array_equal(target.state_dict()[k], v) for k, v in state.items())
    assert load_weights(target, path) is None
    assert_state_equal(target.state_dict(), state)

    x = np.random.default_rng(5).standard_normal(shape)
    source.eval()
    target.eval()
    np.testing.assert_array_equal(target.forward(x), source.forward(x))


def test_suffix_is_appended_when_missing(tmp_path):
    module = classifier(0)
    for given, written in [
        ("plain", "plain.npz"),
        ("run.v2", "run.v2.npz"),
        ("done.npz", "done.npz"),
    ]:
        path = save_weights(module, tmp_path / given)
        assert path == tmp_path / written
        assert path.is_file()
        assert not (tmp_path / given).exists() or given == written
    # a str path works too, and what is written loads back
    path = save_weights(module, str(tmp_path / "text"))
    assert path == tmp_path / "text.npz"
    other = classifier(3)
    load_weights(other, path)
    assert_state_equal(other.state_dict(), module.state_dict())


def test_object_array_is_refused_without_unpickling(tmp_path):
    UNPICKLED.clear()
    source, target = classifier(0), classifier(1)
    state = source.state_dict()
    name = "head.bias"
    state[name] = np.array([Trap() for _ in range(state[name].size)], dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **state)  # writing object arrays pickles them
    before = target.state_dict()
    with pytest.raises(ValueError, match="allow_pickle"):
        load_weights(target, path)
    assert UNPICKLED == []
    assert_state_equal(target.state_dict(), before)
    # the trap does work when pickle is allowed: the check above could fail
    with np.load(path, allow_pickle=True) as archive:
        archive[name]
    assert UNPICKLED == ["trap"] * state[name].size
    UNPICKLED.clear()


def save_state(path, state):
    np.savez(path, **state)
    return path


def test_missing_and_extra_keys_are_named_and_change_nothing(tmp_path):
    source, target = classifier(0), classifier(1)
    before = target.state_dict()
    state = source.state_dict()
    del state["blocks.1.bn2.running_var"]
    state["blocks.1.extra"] = np.zeros(3)
    with pytest.raises(ValueError) as info:
        load_weights(target, save_state(tmp_path / "keys.npz", state))
    message = str(info.value)
    assert "nothing was changed" in message
    assert "missing keys: ['blocks.1.bn2.running_var']" in message
    assert "unexpected keys: ['blocks.1.extra']" in message
    assert_state_equal(target.state_dict(), before)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("stem.0.weight", np.zeros((4, 3, 5, 5)), r"stem\.0\.weight: shape \(4, 3, 5, 5\)"),
        ("head.bias", np.zeros(5), r"head\.bias: shape \(5,\), expected \(4,\)"),
        ("stem.1.num_batches_tracked", np.zeros(1, np.int64), r"num_batches_tracked: shape \(1,\)"),
        ("stem.1.num_batches_tracked", np.array(2.0), r"num_batches_tracked: dtype float64"),
        ("head.weight", np.zeros((4, 8), np.int64), r"head\.weight: dtype int64"),
        ("stem.1.running_var", -np.ones(4), r"running_var: holds negative values"),
        ("head.bias", np.array([0.0, np.nan, 0.0, 0.0]), r"head\.bias: holds non-finite"),
    ],
    ids=["conv-shape", "bias-shape", "counter-shape", "counter-dtype", "int", "var", "nan"],
)
def test_bad_entries_are_named_and_change_nothing(tmp_path, name, value, message):
    source, target = classifier(0), classifier(1)
    before = target.state_dict()
    state = source.state_dict()
    state[name] = value
    with pytest.raises(ValueError, match=message):
        load_weights(target, save_state(tmp_path / "bad.npz", state))
    assert_state_equal(target.state_dict(), before)


def test_fpn_weights_do_not_fit_the_classifier(tmp_path):
    path = save_weights(fpn(0), tmp_path / "fpn")
    target = classifier(1)
    before = target.state_dict()
    with pytest.raises(ValueError, match=r"missing keys: \['blocks\.0\.bn1\.bias'"):
        load_weights(target, path)
    assert_state_equal(target.state_dict(), before)
