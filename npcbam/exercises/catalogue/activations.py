"""Exercises of reading notebook 2: the sigmoid, ReLU's mask, the shared MLP's two uses."""

from __future__ import annotations

import numpy as np

from npcbam.exercises.catalogue.cases import draw_until, shape_label, upstream, values, weights
from npcbam.exercises.registry import Case, Exercise, Misconception, Part
from npcbam.ops.activations import relu_backward, relu_forward, sigmoid_backward, sigmoid_forward
from npcbam.ops.mlp import shared_mlp_backward, shared_mlp_forward

# -- sigmoid -----------------------------------------------------------------------------------


def sigmoid_reference(z):
    return sigmoid_forward(z)[0]


def sigmoid_backward_reference(ds, z):
    _, cache = sigmoid_forward(z)
    return sigmoid_backward(ds, cache)


EXTREME = np.array([-1000.0, -750.0, -100.0, -20.0, -1.0, 0.0, 0.5, 30.0, 100.0, 1000.0])


def sigmoid_cases(rng):
    return [
        Case("z of shape (3, 4) in [-6, 6]", (values(rng, (3, 4), 6.0),)),
        Case("z = ±1000, ±100, 0 (overflow)", (EXTREME.copy(),)),
        Case("z of shape (N, C, 1, 1) = (2, 3, 1, 1)", (values(rng, (2, 3, 1, 1), 4.0),)),
    ]


def sigmoid_backward_cases(rng):
    return [
        Case(
            f"{shape_label(shape='(3, 4)')}, z in [-6, 6]",
            (upstream(rng, (3, 4)), values(rng, (3, 4), 6.0)),
        ),
        Case("z = ±1000, ±100, 0 (overflow)", (upstream(rng, EXTREME.shape), EXTREME.copy())),
        Case(
            "(N, C, 1, 1) = (2, 3, 1, 1)",
            (upstream(rng, (2, 3, 1, 1)), values(rng, (2, 3, 1, 1), 4.0)),
        ),
    ]


def naive_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_of_minus_z(z):
    return sigmoid_reference(-z)


def sigmoid_grad_squared(ds, z):
    s = sigmoid_reference(z)
    return ds * s * s


def sigmoid_grad_on_z(ds, z):
    return ds * z * (1.0 - z)


def sigmoid_grad_without_upstream(ds, z):
    return sigmoid_backward_reference(np.ones_like(ds), z)


SIGMOID = Exercise(
    name="sigmoid",
    title="Sigmoid forward and backward, overflow-free",
    points=1,
    notebook="ex02_sigmoid_relu_mlp",
    reading="02_sigmoid_relu_mlp.ipynb §1–2",
    theory="docs/theory/activations.md",
    parts=(
        Part(
            "sigmoid_forward",
            "sigmoid_forward(z) -> s",
            (("s", "s"),),
            sigmoid_reference,
            sigmoid_cases,
            (
                Misconception(
                    "sigmoid_naive_overflow",
                    "you compute 1/(1 + exp(−z)) directly: for z = −1000, exp(1000) overflows "
                    "(RuntimeWarning) even though the value ends up right; use the two-branch "
                    "form that only exponentiates −|z|",
                    variant=naive_sigmoid,
                ),
                Misconception(
                    "sigmoid_sign",
                    "your s is σ(−z) = 1/(1 + exp(z)): the sign in the exponent is flipped",
                    variant=sigmoid_of_minus_z,
                ),
            ),
        ),
        Part(
            "sigmoid_backward",
            "sigmoid_backward(ds, z) -> dz",
            (("dz", "z̄"),),
            sigmoid_backward_reference,
            sigmoid_backward_cases,
            (
                Misconception(
                    "sigmoid_grad_squared",
                    "your z̄ is s̄ ⊙ σ²: the derivative is σ(1 − σ), not σ²",
                    variant=sigmoid_grad_squared,
                ),
                Misconception(
                    "sigmoid_grad_on_z",
                    "your z̄ is s̄ ⊙ z(1 − z): σ(1 − σ) must be evaluated at σ(z), not at z",
                    variant=sigmoid_grad_on_z,
                ),
                Misconception(
                    "sigmoid_grad_without_upstream",
                    "your z̄ is σ(1 − σ) alone: the chain rule multiplies it by the upstream "
                    "gradient s̄",
                    variant=sigmoid_grad_without_upstream,
                ),
            ),
        ),
    ),
    gradient_pair=("sigmoid_forward", "sigmoid_backward"),
)

# -- ReLU --------------------------------------------------------------------------------------


def relu_backward_reference(dh, p):
    _, cache = relu_forward(p)
    return relu_backward(dh, cache)


def relu_cases(rng):
    with_zeros = values(rng, (4, 5))
    with_zeros.flat[rng.choice(with_zeros.size, 4, replace=False)] = 0.0  # on the kink
    return [
        Case("p of shape (4, 5) with four exact zeros", (upstream(rng, (4, 5)), with_zeros)),
        Case(
            "p of shape (N, C, H, W) = (2, 3, 2, 2)",
            (upstream(rng, (2, 3, 2, 2)), values(rng, (2, 3, 2, 2))),
        ),
    ]


RELU = Exercise(
    name="relu",
    title="ReLU backward: the mask",
    points=1,
    notebook="ex02_sigmoid_relu_mlp",
    reading="02_sigmoid_relu_mlp.ipynb §3",
    theory="docs/theory/activations.md",
    parts=(
        Part(
            "relu_backward",
            "relu_backward(dh, p) -> dp",
            (("dp", "p̄"),),
            relu_backward_reference,
            relu_cases,
            (
                Misconception(
                    "relu_mask_ge",
                    "your mask is [p ≥ 0]: at p = 0 exactly, p̄ must be 0 ([p > 0], the "
                    "subgradient PyTorch takes)",
                    variant=lambda dh, p: dh * (p >= 0),
                ),
                Misconception(
                    "relu_mask_on_upstream",
                    "your mask is [h̄ > 0]: it must come from the forward's input, [p > 0]",
                    variant=lambda dh, p: dh * (dh > 0),
                ),
                Misconception(
                    "relu_mask_without_upstream",
                    "your p̄ is the mask [p > 0] alone: multiply it by the upstream gradient h̄",
                    variant=lambda dh, p: (p > 0).astype(np.float64),
                ),
            ),
        ),
    ),
)

# -- the shared MLP ----------------------------------------------------------------------------


def mlp_uses(dy, a, m, w0, w1):
    """Each use's (v̄, W̄₀, W̄₁) of y = MLP(a) + MLP(m): the sum hands ȳ to both."""
    _, cache_a = shared_mlp_forward(a, w0, w1)
    _, cache_m = shared_mlp_forward(m, w0, w1)
    da, dw0_a, dw1_a, _, _ = shared_mlp_backward(dy, cache_a)
    dm, dw0_m, dw1_m, _, _ = shared_mlp_backward(dy, cache_m)
    return (da, dw0_a, dw1_a), (dm, dw0_m, dw1_m)


def shared_mlp_reference(dy, a, m, w0, w1):
    (da, dw0_a, dw1_a), (dm, dw0_m, dw1_m) = mlp_uses(dy, a, m, w0, w1)
    return da, dm, dw0_a + dw0_m, dw1_a + dw1_m  # the weights are shared: their gradients add


def mlp_first_use_only(dy, a, m, w0, w1):
    (da, dw0_a, dw1_a), (dm, _, _) = mlp_uses(dy, a, m, w0, w1)
    return da, dm, dw0_a, dw1_a


def mlp_second_use_only(dy, a, m, w0, w1):
    (da, _, _), (dm, dw0_m, dw1_m) = mlp_uses(dy, a, m, w0, w1)
    return da, dm, dw0_m, dw1_m


def mlp_weights_transposed(dy, a, m, w0, w1):
    da, dm, dw0, dw1 = shared_mlp_reference(dy, a, m, w0, w1)
    return da, dm, dw0.T, dw1.T


def mlp_case(rng, n, c, hidden):
    def draw(rng):
        a, m = values(rng, (n, c)), values(rng, (n, c))
        return upstream(rng, (n, c)), a, m, weights(rng, (hidden, c)), weights(rng, (c, hidden))

    def away_from_kinks(args):
        _, a, m, w0, _ = args
        pre = np.concatenate([a, m]) @ w0.T  # (2N, C/r): the ReLU's inputs
        return np.abs(pre).min() > 1e-3 and (pre > 0).any() and (pre < 0).any()

    args = draw_until(rng, draw, away_from_kinks)
    return Case(shape_label(N=n, C=c, hidden=hidden), args)


MLP_WEIGHT_TEXT = "the weights are shared, so W̄₀ and W̄₁ are the sums over both uses"

SHARED_MLP = Exercise(
    name="shared_mlp",
    title="The shared MLP's backward: two uses of one weight",
    points=2,
    notebook="ex02_sigmoid_relu_mlp",
    reading="02_sigmoid_relu_mlp.ipynb §5–6",
    theory="docs/theory/shared-mlp.md",
    parts=(
        Part(
            "shared_mlp_backward",
            "shared_mlp_backward(dy, a, m, w0, w1) -> (da, dm, dw0, dw1)",
            (("da", "ā"), ("dm", "m̄"), ("dw0", "W̄₀"), ("dw1", "W̄₁")),
            shared_mlp_reference,
            lambda rng: [mlp_case(rng, 3, 8, 2), mlp_case(rng, 1, 4, 1), mlp_case(rng, 2, 6, 3)],
            (
                Misconception(
                    "mlp_first_use_only",
                    "your W̄₀ and W̄₁ hold only the first use (on a): the second use's "
                    f"gradient was dropped (`=` where `+=` belongs); {MLP_WEIGHT_TEXT}",
                    variant=mlp_first_use_only,
                ),
                Misconception(
                    "mlp_second_use_only",
                    "your W̄₀ and W̄₁ hold only the second use (on m): the first use's "
                    f"gradient was overwritten (`=` where `+=` belongs); {MLP_WEIGHT_TEXT}",
                    variant=mlp_second_use_only,
                ),
                Misconception(
                    "mlp_weight_grad_transposed",
                    "your W̄₀ and W̄₁ are transposed: W̄ = p̄ᵀ v has the shape of W, "
                    "(out, in), not vᵀ p̄",
                    variant=mlp_weights_transposed,
                ),
                Misconception(
                    "mlp_relu_mask_missing",
                    "your gradients skip the ReLU's mask: p̄ = q̄ ⊙ [p > 0], not q̄",
                    plants=lambda: {"relu_backward": lambda dout, cache: dout},
                ),
                Misconception(
                    "mlp_second_use_from_a",
                    "your gradients are those of MLP(a) + MLP(a): the second use was computed "
                    "from a instead of m (copy-paste)",
                    variant=lambda dy, a, m, w0, w1: shared_mlp_reference(dy, a, a, w0, w1),
                ),
            ),
        ),
    ),
)

EXERCISES = (SIGMOID, RELU, SHARED_MLP)
