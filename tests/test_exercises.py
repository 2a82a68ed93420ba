"""The exercise checker in both directions: it never passes a wrong answer (planted
misconceptions, mutations, bad returns) and never fails a right one written differently
(loops, np.add.at, another order of operations)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from npcbam.exercises import EXERCISES, check, evaluate
from npcbam.exercises.planting import planted
from npcbam.exercises.runner import LocalRunner
from npcbam.ops import reference as oracle

COMPARED = {name: ex for name, ex in EXERCISES.items() if ex.kind == "compare"}
PLANTS = [
    (name, part.function, misconception)
    for name, ex in COMPARED.items()
    for part in ex.parts
    for misconception in part.misconceptions
]


def run(name: str, **replacements):
    """Evaluate exercise ``name`` on the reference solution with some functions replaced."""
    functions = EXERCISES[name].reference_functions()
    functions.update(replacements)
    return evaluate(name, LocalRunner(functions))


def test_at_least_13_exercises_plus_the_open_one_and_25_misconceptions():
    assert len(COMPARED) >= 13
    assert [ex.name for ex in EXERCISES.values() if ex.kind == "open"] == ["my_gate"]
    assert len(PLANTS) >= 25
    keys = [m.key for _, _, m in PLANTS]
    assert len(set(keys)) >= 25


@pytest.mark.parametrize("name", COMPARED)
def test_the_reference_solution_passes(name):
    result = run(name)
    assert result.status == "passed", result.report
    assert result.score == EXERCISES[name].points
    assert result.report.startswith(f"PASS {name}")


@pytest.mark.parametrize(
    ("name", "function", "misconception"), PLANTS, ids=[m.key for _, _, m in PLANTS]
)
def test_a_planted_misconception_gets_exactly_its_diagnosis(name, function, misconception):
    part = EXERCISES[name].part(function)
    result = run(name, **{function: misconception.function(part.reference)})
    assert result.status == "failed", result.report
    assert result.score == 0
    assert result.diagnoses == [misconception.key], result.report
    assert f"Diagnosis: {misconception.message}" in result.report
    assert EXERCISES[name].theory in result.report  # where to read


# -- mutations that are in no catalogue: FAIL, and no diagnosis --------------------------------


def _mutated(reference, output: int, how: str):
    def wrong(*args):
        value = reference(*args)
        outputs = list(value) if isinstance(value, tuple) else [value]
        target = np.array(outputs[output], dtype=np.float64)
        if how == "scaled":
            target = target * 1.01
        elif how == "sign":
            target = -target
        elif how == "transposed":
            swapped = np.swapaxes(target, -1, -2) if target.ndim >= 2 else target
            if np.array_equal(swapped, target):  # a square symmetric or 1-D output
                swapped = target.ravel()[::-1].reshape(target.shape)
            target = swapped.copy()
        elif how == "zeroed":
            flat = np.flatnonzero(np.abs(target) > 1e-6)
            if flat.size:  # one nonzero entry (a case whose output is all zero stays right)
                target.flat[flat[len(flat) // 2]] = 0.0
        outputs[output] = target
        return tuple(outputs) if isinstance(value, tuple) else outputs[0]

    return wrong


MUTATIONS = [
    (name, part.function, output, how)
    for name, ex in COMPARED.items()
    for part in ex.parts
    for output in range(len(part.outputs))
    for how in ("scaled", "sign", "transposed", "zeroed")
]


@pytest.mark.parametrize(
    ("name", "function", "output", "how"),
    MUTATIONS,
    ids=[f"{f}-{o}-{h}" for _, f, o, h in MUTATIONS],
)
def test_a_mutation_fails_without_a_wrong_diagnosis(name, function, output, how):
    part = EXERCISES[name].part(function)
    mutated = _mutated(part.reference, output, how)
    result = run(name, **{function: mutated})
    assert result.status == "failed", result.report
    assert result.diagnoses == [], result.report
    assert "Diagnosis" not in result.report


# -- correct solutions written differently: all PASS -------------------------------------------


def global_max_pool_backward_loops(dm, x):
    dx = np.zeros_like(x)
    n, c, h, w = x.shape
    for i in range(n):
        for j in range(c):
            best = (0, 0)
            for u in range(h):
                for v in range(w):
                    if x[i, j, u, v] > x[i, j, best[0], best[1]]:  # strict: the first wins
                        best = (u, v)
            dx[i, j, best[0], best[1]] += dm[i, j]
    return dx


def col2im_add_at(cols, x_shape, kh, kw, stride, padding):
    n, c, h, w = x_shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    padded = np.zeros((n, c, h + 2 * padding, w + 2 * padding))
    ch, u, v = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    b, i, j = np.meshgrid(np.arange(n), np.arange(ho), np.arange(wo), indexing="ij")
    rows = (stride * i.reshape(1, -1) + u.reshape(-1, 1)).ravel()  # (C*kh*kw * N*Ho*Wo,)
    columns = (stride * j.reshape(1, -1) + v.reshape(-1, 1)).ravel()
    images = np.broadcast_to(b.reshape(1, -1), (c * kh * kw, b.size)).ravel()
    channels = np.broadcast_to(ch.reshape(-1, 1), (c * kh * kw, b.size)).ravel()
    np.add.at(padded, (images, channels, rows, columns), cols.ravel())
    return padded[:, :, padding : padding + h, padding : padding + w]


def conv2d_backward_loops(dy, x, w, stride, padding):
    dx, dw, db = oracle.conv2d_backward_naive(
        dy, x, w, (stride, stride), (padding, padding), with_bias=True
    )
    return dx, dw, db


def sigmoid_forward_logaddexp(z):
    return np.exp(-np.logaddexp(0.0, -z))  # σ(z) = 1 / (1 + e^{-z}) = e^{-log(1 + e^{-z})}


def sigmoid_backward_tanh(ds, z):
    s = 0.5 * (1.0 + np.tanh(z / 2))  # another exact form of σ
    return ds * s * (1.0 - s)


def channel_attention_backward_other_order(dy, x, w0, w1):
    """The max branch first, the gate's term last, the weight gradients as einsums."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)  # (N, C, H, W) -> (N, C, H*W)
    winners = flat.argmax(axis=2)
    m = np.take_along_axis(flat, winners[:, :, None], axis=2)[:, :, 0]  # (N, C)
    a = flat.mean(axis=2)
    p_m, p_a = m @ w0.T, a @ w0.T
    q_m, q_a = np.maximum(p_m, 0), np.maximum(p_a, 0)
    g = 1 / (1 + np.exp(-(q_m @ w1.T + q_a @ w1.T)))  # (N, C); moderate logits here
    dg = np.einsum("nchw,nchw->nc", dy, x)
    dz = dg * g * (1 - g)
    dw1 = np.einsum("nc,nh->ch", dz, q_m) + np.einsum("nc,nh->ch", dz, q_a)
    dp_m, dp_a = (dz @ w1) * (p_m > 0), (dz @ w1) * (p_a > 0)
    dw0 = np.einsum("nh,nc->hc", dp_m, m) + np.einsum("nh,nc->hc", dp_a, a)
    dx = np.zeros_like(flat)
    np.put_along_axis(dx, winners[:, :, None], (dp_m @ w0)[:, :, None], axis=2)
    dx += (dp_a @ w0)[:, :, None] / (h * w)
    dx = dx.reshape(x.shape) + dy * g[:, :, None, None]
    return dx, dw0, dw1


def gate_backward_loops(dy, x, g):
    dx, dg = oracle.gate_backward_naive(dy, x, g)
    return dx, dg


ALTERNATIVES = [
    ("global_max_pool", {"global_max_pool_backward": global_max_pool_backward_loops}),
    ("col2im", {"col2im": col2im_add_at}),
    ("conv2d", {"conv2d_backward": conv2d_backward_loops}),
    ("sigmoid", {"sigmoid_forward": sigmoid_forward_logaddexp}),
    ("sigmoid", {"sigmoid_backward": sigmoid_backward_tanh}),
    ("channel_attention", {"channel_attention_backward": channel_attention_backward_other_order}),
    ("gate", {"gate_backward": gate_backward_loops}),
    ("channel_max_pool", {"channel_max_pool_backward": oracle.channel_max_pool_backward_naive}),
]


@pytest.mark.parametrize(
    ("name", "functions"), ALTERNATIVES, ids=[next(iter(f)) for _, f in ALTERNATIVES]
)
def test_a_correct_solution_written_differently_passes(name, functions):
    result = run(name, **functions)
    assert result.status == "passed", result.report


# -- what a student's function can do wrong besides the maths ----------------------------------


def test_not_attempted_and_missing():
    def unfinished(da, x):
        raise NotImplementedError()

    result = evaluate("global_avg_pool", LocalRunner({"global_avg_pool_backward": unfinished}))
    assert result.status == "not attempted" and result.score == 0
    assert "not attempted" in result.report
    result = evaluate("global_avg_pool", LocalRunner({}))
    assert result.status == "missing"
    assert "global_avg_pool_backward(da, x) -> dx" in result.report


def test_an_exception_is_shown_with_the_line_that_raised():
    def broken(da, x):
        dx = da @ x  # a wrong product: the shapes do not agree
        return dx

    result = run("global_avg_pool", global_avg_pool_backward=broken)
    assert result.status == "error"
    assert "ValueError" in result.report or "matmul" in result.report
    assert "dx = da @ x" in result.report


@pytest.mark.parametrize(
    ("returned", "words"),
    [
        (lambda dy, x, g: None, "returned None"),
        (lambda dy, x, g: "dx", "returned a str"),
        (lambda dy, x, g: (dy * g,), "returned a tuple of 1 item; expected (dx, dg)"),
        (lambda dy, x, g: (dy * g, np.float32(1.0) * dy), "has shape"),
        (lambda dy, x, g: ((dy * g).astype(np.float32), dy.sum((2, 3), keepdims=True)), "dtype"),
    ],
    ids=["none", "str", "too-few", "wrong-shape", "float32"],
)
def test_a_garbage_return_gets_clear_words(returned, words):
    result = run("gate", gate_backward=returned)
    assert result.status == "failed", result.report
    assert words in result.report, result.report


def test_an_input_modified_in_place_fails_and_is_named():
    def in_place(da, x):
        _, _, h, w = x.shape
        x[...] = (da / (h * w))[:, :, None, None]  # right values, but written into x
        return x

    result = run("global_avg_pool", global_avg_pool_backward=in_place)
    assert result.status == "failed"
    assert "changed its input x in place" in result.report


def test_a_warning_fails_even_with_right_values():
    def noisy(z):
        with np.errstate(over="warn"):
            return 1.0 / (1.0 + np.exp(-z))

    result = run("sigmoid", sigmoid_forward=noisy)
    assert result.status == "failed"
    assert "overflow" in result.report


def test_the_student_function_sees_copies_and_cannot_change_the_reference():
    seen = []

    def vandal(da, x):
        seen.append(x)
        x[...] = 0.0
        da[...] = 0.0
        return np.zeros_like(x)

    result = run("global_avg_pool", global_avg_pool_backward=vandal)
    assert result.status == "failed" and "entries differ" in result.report
    # the reference was computed before, from the checker's own copies: still a real failure
    assert all(np.all(x == 0) for x in seen)


# -- finite differences on the student's own forward and backward ------------------------------


def test_sigmoid_pair_is_also_checked_by_finite_differences():
    result = run("sigmoid")
    assert "finite differences of your sigmoid_forward agree with your sigmoid_backward" in (
        result.report
    )


# -- the open exercise -------------------------------------------------------------------------


def my_gate_init(channels, seed):
    rng = np.random.default_rng(seed)
    return {"scale": rng.standard_normal(channels), "shift": rng.standard_normal(channels)}


def my_gate_forward(x, params):
    z = params["scale"][None, :, None, None] * x.mean(axis=(2, 3), keepdims=True)
    g = 1 / (1 + np.exp(-(z + params["shift"][None, :, None, None])))
    return g * x


def my_gate_backward(dy, x, params):
    _, _, h, w = x.shape
    mean = x.mean(axis=(2, 3), keepdims=True)
    g = 1 / (
        1
        + np.exp(
            -(params["scale"][None, :, None, None] * mean + params["shift"][None, :, None, None])
        )
    )
    dg = (dy * x).sum(axis=(2, 3), keepdims=True)
    dz = dg * g * (1 - g)
    dscale = (dz * mean).sum(axis=(0, 2, 3))
    dshift = dz.sum(axis=(0, 2, 3))
    dx = dy * g + params["scale"][None, :, None, None] * dz / (h * w)
    return dx, {"scale": dscale, "shift": dshift}


def test_the_open_exercise_passes_a_correct_gate_and_fails_a_wrong_one():
    functions = {
        "my_gate_init": my_gate_init,
        "my_gate_forward": my_gate_forward,
        "my_gate_backward": my_gate_backward,
    }
    result = evaluate("my_gate", LocalRunner(functions))
    assert result.status == "passed", result.report

    def half_wrong(dy, x, params):
        dx, grads = my_gate_backward(dy, x, params)
        return dx, {**grads, "shift": 1.01 * grads["shift"]}

    result = evaluate("my_gate", LocalRunner({**functions, "my_gate_backward": half_wrong}))
    assert result.status == "failed", result.report
    assert "gradient of params['shift']" in result.report and ": FAIL" in result.report

    def without_gate_term(dy, x, params):
        dx, grads = my_gate_backward(dy, x, params)
        return dx - dy * my_gate_forward(x, params) / x, grads

    result = evaluate("my_gate", LocalRunner({**functions, "my_gate_backward": without_gate_term}))
    assert result.status == "failed"

    def unfinished(*args):
        raise NotImplementedError

    result = evaluate("my_gate", LocalRunner({"my_gate_init": unfinished}))
    assert result.status == "not attempted"


# -- check() in a notebook ---------------------------------------------------------------------


def test_check_prints_the_report_and_looks_functions_up_by_name(capsys, monkeypatch):
    monkeypatch.delenv("NPCBAM_GRADING", raising=False)

    def relu_backward(dh, p):
        return dh * (p > 0)

    result = check("relu", relu_backward)
    assert result.passed and capsys.readouterr().out.startswith("PASS relu")
    globals()["relu_backward"] = relu_backward
    try:
        assert check("relu").passed
    finally:
        del globals()["relu_backward"]
    with pytest.raises(TypeError, match="takes 1 function"):
        check("relu", relu_backward, relu_backward)
    with pytest.raises(ValueError, match="no exercise named 'relu_forward'"):
        check("relu_forward", relu_backward)


def test_check_does_nothing_while_grading(monkeypatch, capsys):
    monkeypatch.setenv("NPCBAM_GRADING", "1")
    assert check("relu", lambda dh, p: dh) is None
    assert capsys.readouterr().out == ""


def test_planting_restores_the_originals_even_after_an_error():
    import npcbam.nn.channel_attention as module
    import npcbam.ops.pooling as pooling

    original = pooling.global_avg_pool_backward
    with pytest.raises(RuntimeError), planted({"global_avg_pool_backward": lambda *a: None}):
        assert module.global_avg_pool_backward is not original
        raise RuntimeError
    assert pooling.global_avg_pool_backward is original
    assert module.global_avg_pool_backward is original


def test_the_readme_and_course_page_counts_match_the_registry():
    """The prose says how many exercises, notebooks and catalogued mistakes there are: the
    registry decides."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    words = {"sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20}
    words |= {"twenty-one": 21, "twenty-two": 22, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
    notebooks = {exercise.notebook for exercise in EXERCISES.values()}
    mistakes = sum(len(exercise.misconceptions) for exercise in EXERCISES.values())
    for page in (root / "README.md", root / "docs" / "course.md"):
        text = page.read_text(encoding="utf-8").replace("\n", " ")
        found = re.search(r"(\S+) exercises in (\S+) notebooks", text, re.I)
        assert found, f"{page.name}: no 'N exercises in M notebooks'"
        assert words[found[1].lower()] == len(EXERCISES), (page.name, found[0])
        assert words[found[2].lower()] == len(notebooks), (page.name, found[0])
    readme = (root / "README.md").read_text(encoding="utf-8").replace("\n", " ")
    assert f"{mistakes} catalogued mistakes" in readme
