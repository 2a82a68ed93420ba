r"""Gradient-check your own layer: kink-free inputs and assertions for your tests.

npcbam's own test suite checks every backward pass with these tools; they work the same on a
layer of yours.

* **Assertions.** :func:`assert_gradients` checks a functional pair
  ``forward(*inputs) -> (out, cache)``, ``backward(dout, cache) -> grads`` against central
  finite differences (:func:`npcbam.gradcheck.check_op_gradients`);
  :func:`assert_module_gradients` checks a module (:func:`npcbam.gradcheck.check_gradients`).
  Both raise ``AssertionError`` with the report table when an entry fails, when a kink was
  crossed (an entry that could not be compared), or when the worst relative error exceeds
  ``max_rel_err``.
* **Margins.** Finite differences are meaningless across a kink: a max whose two largest
  entries swap, or a ReLU whose input changes sign, within the stencil :math:`\theta \pm 2h`.
  :func:`top2_gap` and :func:`relu_margin` measure how far an input is from those kinks,
  :func:`kink_margin` and :func:`kink_free` combine them, for ``hypothesis.assume``.
* **Strategies** (hypothesis): :func:`distinct_arrays`, :func:`feature_maps`,
  :func:`feature_map_shapes`, :func:`channels_and_reduction`, :func:`seeds`. Tie-free float64
  inputs, and the edge shapes where bugs hide: N = 1, H = W = 1, H ≠ W, C = r.

Importing this module needs NumPy only (``import npcbam`` never imports hypothesis); the
strategies need hypothesis, from the ``test`` extra: ``pip install "npcbam[test]"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from npcbam.gradcheck import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    GradcheckReport,
    check_gradients,
    check_op_gradients,
    distinct_values,
)

__all__ = [
    "MAX_REL_ERR",
    "SAFE_MARGIN",
    "assert_gradients",
    "assert_module_gradients",
    "assert_report",
    "channels_and_reduction",
    "distinct_arrays",
    "feature_map_shapes",
    "feature_maps",
    "kink_free",
    "kink_margin",
    "relative_error",
    "relu_margin",
    "seeds",
    "top2_gap",
]

SAFE_MARGIN = 1e-2
"""A kink margin that no finite difference crosses: the default stencil (order 4,
:math:`h = 10^{-4}`) moves an entry by at most :math:`2h = 2 \\times 10^{-4}`, fifty times less."""

MAX_REL_ERR = 1e-6
"""The acceptance bound on the worst relative error between analytic and finite-difference
gradients. Correct float64 backward passes reach about 1e-8 or below, typical bugs 1e-2 to 1."""


# -- margins: how far an input is from a kink (NumPy only) -----------------------------------


def top2_gap(x: np.ndarray, axis: int | tuple[int, ...]) -> float:
    r"""The margin of a max over ``axis`` from its kink: the smallest gap between the largest
    and the second-largest entry.

    .. math:: \min_{\text{kept indices}} \big(x_{(1)} - x_{(2)}\big)

    over every position of the axes that are not pooled. A max whose gap exceeds the
    finite-difference stencil keeps its winner in every perturbed evaluation.

    Parameters
    ----------
    x : ndarray, any shape
    axis : int or tuple of int
        The pooled axes, e.g. ``(2, 3)`` for a global max over H×W of an (N, C, H, W) map,
        ``1`` for a max over channels.

    Returns
    -------
    float
        The smallest gap; ``inf`` when the pooled axes hold fewer than two entries (a max of
        one entry has no kink).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[3.0, 1.0, 2.5], [0.0, -1.0, 4.0]])
    >>> top2_gap(x, axis=1)
    0.5
    >>> top2_gap(x[:, :1], axis=1)
    inf
    """
    x = np.asarray(x)
    axes = tuple(int(a) % x.ndim for a in (np.atleast_1d(axis)))
    pooled = np.moveaxis(x, axes, range(x.ndim - len(axes), x.ndim))  # pooled axes last
    pooled = pooled.reshape(*pooled.shape[: x.ndim - len(axes)], -1)  # (..., pooled size)
    if pooled.shape[-1] < 2 or pooled.size == 0:
        return math.inf
    top = np.sort(pooled, axis=-1)[..., -2:]  # (..., 2): second-largest, largest
    return float((top[..., 1] - top[..., 0]).min())


def relu_margin(pre_activation: np.ndarray) -> float:
    r"""The margin of a ReLU from its kink: :math:`\min |z|` over its pre-activation ``z``
    (``inf`` for an empty array).

    Examples
    --------
    >>> import numpy as np
    >>> relu_margin(np.array([-0.5, 0.25, 2.0]))
    0.25
    """
    z = np.abs(np.asarray(pre_activation))
    return float(z.min()) if z.size else math.inf


def kink_margin(
    *,
    maxima: Iterable[tuple[np.ndarray, int | tuple[int, ...]]] = (),
    relus: Iterable[np.ndarray] = (),
) -> float:
    """How far an evaluation is from every kink it meets: the smallest :func:`top2_gap` over
    ``maxima`` and :func:`relu_margin` over ``relus`` (``inf`` when both are empty).

    Pass the tensors that are *actually* maxed or rectified, which are not always the input:
    CBAM's max over channels acts on the channel-gated map, and a ReLU inside an MLP on
    ``v @ W.T``.

    Parameters
    ----------
    maxima : iterable of (ndarray, axis)
        Each array that a max reduces, with the reduced axes.
    relus : iterable of ndarray
        Each pre-activation that a ReLU (or another function with a kink at 0) receives.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.25, -1.0, 1.0]])
    >>> w = np.array([[1.0, 0.0, 1.0]])
    >>> kink_margin(maxima=[(x, 1)], relus=[x @ w.T])  # gap 1 - 0.25, pre-activation 1.25
    0.75
    """
    margins = [top2_gap(array, axis) for array, axis in maxima]
    margins += [relu_margin(z) for z in relus]
    return min(margins, default=math.inf)


def kink_free(
    *,
    maxima: Iterable[tuple[np.ndarray, int | tuple[int, ...]]] = (),
    relus: Iterable[np.ndarray] = (),
    margin: float = SAFE_MARGIN,
) -> bool:
    """Whether every max and ReLU is at least ``margin`` from its kink (:func:`kink_margin`):
    the condition to give ``hypothesis.assume`` before a gradient check.

    Examples
    --------
    >>> import numpy as np
    >>> kink_free(relus=[np.array([0.5, -0.2])])
    True
    >>> kink_free(relus=[np.array([0.5, 1e-5])])
    False
    """
    return kink_margin(maxima=maxima, relus=relus) >= margin


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    r"""Normwise relative error :math:`\max|a - e| / \max|e|` in float64, the measure of
    agreement with another implementation (PyTorch, a loop oracle).

    Returns 0 when both are all zero, ``inf`` when only ``expected`` is.

    Raises
    ------
    ValueError
        If the shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> relative_error(np.array([1.0, 2.02]), np.array([1.0, 2.0]))  # doctest: +ELLIPSIS
    0.0100...
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shapes differ: {actual.shape} and {expected.shape}")
    diff, scale = np.abs(actual - expected).max(initial=0.0), np.abs(expected).max(initial=0.0)
    if scale == 0:
        return 0.0 if diff == 0 else math.inf
    return float(diff / scale)


# -- assertions ---------------------------------------------------------------------------------


def _problems(report: GradcheckReport, max_rel_err: float) -> list[str]:
    """What is wrong with a report, one sentence each (empty when it is clean)."""
    problems = []
    if report.kinks:
        h = report.settings.h
        problems.append(
            f"{report.kinks} entr{'y' if report.kinks == 1 else 'ies'} crossed a kink and could "
            f"not be compared: a max whose two largest entries, or a ReLU input and 0, are "
            f"closer than the stencil (about {2 * h:g}). This is a property of the input, not "
            f"of the backward, and never a reason to loosen rtol or atol: draw distinct inputs "
            f"(distinct_arrays, feature_maps) and keep the maxed and rectified tensors away "
            f"from their kinks, e.g. assume(kink_free(maxima=..., relus=...)), whose default "
            f"margin is SAFE_MARGIN = {SAFE_MARGIN:g}."
        )
    for row in report.rows:
        if row.passed:
            continue
        if row.checked == 0:
            problems.append(f"{row.name}: no entry could be compared")
        else:
            problems.append(
                f"{row.name}: analytic and finite-difference gradients differ, worst relative "
                f"error {row.max_rel_err:.2e} at {row.where}"
            )
    if report.passed and report.max_rel_err > max_rel_err:  # within rtol, above the bound
        problems.append(
            f"the worst relative error {report.max_rel_err:.2e} exceeds "
            f"max_rel_err = {max_rel_err:g}"
        )
    return problems


def assert_report(report: GradcheckReport, *, max_rel_err: float = MAX_REL_ERR) -> None:
    """Assert that a gradient check is clean: every row passed, no kink crossed, and the worst
    relative error at most ``max_rel_err``.

    Parameters
    ----------
    report : GradcheckReport
        From :func:`~npcbam.gradcheck.check_gradients` or
        :func:`~npcbam.gradcheck.check_op_gradients`.
    max_rel_err : float
        The bound on ``report.max_rel_err``.

    Raises
    ------
    AssertionError
        Saying what is wrong (which tensor, or how to avoid a kink), followed by the report's
        table.
    """
    problems = _problems(report, max_rel_err)
    if problems:
        reasons = "\n".join(f"- {problem}" for problem in problems)
        raise AssertionError(f"gradient check of {report.title} failed:\n{reasons}\n\n{report}")


def assert_gradients(
    forward: Callable,
    backward: Callable,
    inputs: Mapping[str, np.ndarray],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    mode: str = "auto",
    max_rel_err: float = MAX_REL_ERR,
    title: str | None = None,
    **settings,
) -> GradcheckReport:
    r"""Assert that ``backward`` is the derivative of ``forward``, by central finite
    differences in float64.

    Runs :func:`~npcbam.gradcheck.check_op_gradients` on the functional pair and
    :func:`assert_report` on its report.

    Parameters
    ----------
    forward : callable
        ``forward(*inputs.values()) -> (out, cache)``. Bind non-differentiable arguments
        (stride, a flag) with a ``lambda`` or ``functools.partial``. A cache made of
        NamedTuples with ``winners`` fields (argmax indices, ReLU masks) lets the checker
        detect kinks.
    backward : callable
        ``backward(dout, cache) -> grads``: one gradient per input, in order (a single array
        for a single input).
    inputs : mapping of str to ndarray, float64
        The differentiable inputs by name; not modified. float32 is refused (``TypeError``).
    rtol, atol : float
        An entry passes when :math:`|a - n| \le \text{atol} + \text{rtol}\,|n|` (analytic
        :math:`a`, numerical :math:`n`).
    seed : int
        Seeds the random upstream gradient and the random directions.
    mode : {"auto", "full", "sample", "random"}
        As in :func:`~npcbam.gradcheck.check_gradients`.
    max_rel_err : float
        The bound on the worst relative error.
    title : str, optional
        The report's title (default: the forward's name).
    **settings
        ``h``, ``order``, ``max_full``, ``n_directions``, ``n_samples`` of
        :func:`~npcbam.gradcheck.check_gradients`.

    Returns
    -------
    GradcheckReport
        The clean report, for a closer look.

    Raises
    ------
    AssertionError
        With the report's table, if an entry failed, a kink was crossed or the worst relative
        error exceeds ``max_rel_err``.
    TypeError
        If an input is not float64.

    Examples
    --------
    A custom element-wise op, the softplus :math:`f(z) = \log(1 + e^z)`, whose derivative is
    the sigmoid:

    >>> import numpy as np
    >>> from npcbam.testing import assert_gradients
    >>> def softplus_forward(z):
    ...     return np.logaddexp(0.0, z), z
    >>> def softplus_backward(dout, z):
    ...     return dout / (1.0 + np.exp(-z))
    >>> z = np.random.default_rng(0).standard_normal((3, 4))
    >>> report = assert_gradients(softplus_forward, softplus_backward, {"z": z})
    >>> report.passed
    True

    A backward that forgot the chain rule's ``dout`` fails, with the table:

    >>> def softplus_backward_wrong(dout, z):
    ...     return 1.0 / (1.0 + np.exp(-z))
    >>> assert_gradients(softplus_forward, softplus_backward_wrong, {"z": z})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    AssertionError: gradient check of softplus_forward failed:
    - z: analytic and finite-difference gradients differ, ...

    Checked with hypothesis over random shapes and values (:func:`distinct_arrays`):

    >>> from hypothesis import given, settings
    >>> from npcbam.testing import distinct_arrays, feature_map_shapes
    >>> @settings(max_examples=10)
    ... @given(z=distinct_arrays(feature_map_shapes()))
    ... def test_softplus(z):
    ...     assert_gradients(softplus_forward, softplus_backward, {"z": z})
    >>> test_softplus()
    """
    report = check_op_gradients(
        forward,
        backward,
        inputs,
        title=title,
        seed=seed,
        rtol=rtol,
        atol=atol,
        mode=mode,
        **settings,
    )
    assert_report(report, max_rel_err=max_rel_err)
    return report


def assert_module_gradients(
    module,
    x: np.ndarray,
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
    mode: str = "auto",
    max_rel_err: float = MAX_REL_ERR,
    **settings,
) -> GradcheckReport:
    r"""Assert that a module's backward is the derivative of its forward, for the input and
    every parameter, by central finite differences in float64.

    Runs :func:`~npcbam.gradcheck.check_gradients` and :func:`assert_report` on its report.
    The parameters are as in :func:`assert_gradients`; ``module`` follows npcbam's module
    protocol (:class:`~npcbam.nn.module.Module`) and ``x`` is its float64 input.

    Returns
    -------
    GradcheckReport
        The clean report.

    Raises
    ------
    AssertionError
        With the report's table, if a row failed, a kink was crossed or the worst relative
        error exceeds ``max_rel_err``.
    TypeError
        If ``x`` or a parameter is not float64.

    Examples
    --------
    >>> import numpy as np, npcbam
    >>> from npcbam.testing import assert_module_gradients
    >>> module = npcbam.SpatialAttention(kernel_size=3, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((2, 4, 3, 5))
    >>> [row.name for row in assert_module_gradients(module, x).rows]
    ['input', 'conv.weight']
    """
    report = check_gradients(module, x, seed=seed, rtol=rtol, atol=atol, mode=mode, **settings)
    assert_report(report, max_rel_err=max_rel_err)
    return report


# -- hypothesis strategies (imported only when one is asked for) ------------------------------


def _hypothesis_strategies():
    """``hypothesis.strategies``, or an ImportError naming the extra that brings it."""
    try:
        from hypothesis import strategies
    except ImportError as error:
        raise ImportError(
            'the strategies of npcbam.testing need hypothesis: pip install "npcbam[test]"'
        ) from error
    return strategies


def _integers(st, value: int | tuple[int, int], name: str):
    """A fixed int, or an inclusive (low, high) range, as a strategy."""
    if isinstance(value, int):
        low = high = value
    else:
        low, high = value
    if not 1 <= low <= high:
        raise ValueError(f"{name}={value!r}; expected an int >= 1 or a range (low, high)")
    return st.integers(low, high)


def seeds():
    """Strategy: a seed for ``np.random.default_rng`` (an int in [0, 2**32 - 1])."""
    return _hypothesis_strategies().integers(0, 2**32 - 1)


def distinct_arrays(shape, *, scale: float = 2.0, min_abs: float = 0.0):
    r"""Strategy: float64 arrays with distinct entries, a margin between neighbours.

    The entries are a shuffled, evenly spaced grid in :math:`[-\text{scale}, \text{scale}]`
    (:func:`~npcbam.gradcheck.distinct_values`, drawn from a seed): every max over any axes
    has a unique winner, with a gap of at least :math:`2\,\text{scale} / (\text{size} - 1)`,
    about 1e-3 for 4000 entries at the default scale, far wider than the finite-difference
    stencil. (hypothesis's own ``arrays()`` fills undrawn entries with one shared value by
    default: ties everywhere.)

    Parameters
    ----------
    shape : tuple of int, or a strategy of them
        E.g. ``(2, 3)``, or :func:`feature_map_shapes` to draw the shape too.
    scale : float
        Half the width of the grid.
    min_abs : float
        Move every entry at least this far from 0 (entries :math:`v \ge 0` become
        :math:`v + \text{min\_abs}`, entries :math:`v < 0` become :math:`v - \text{min\_abs}`),
        keeping them distinct: inputs that a ReLU-like kink at 0 never meets.

    Examples
    --------
    >>> import numpy as np
    >>> from hypothesis import given
    >>> from npcbam.testing import distinct_arrays
    >>> @given(distinct_arrays((2, 3), min_abs=0.5))
    ... def test_inputs_away_from_zero(x):
    ...     assert x.dtype == np.float64 and x.shape == (2, 3)
    ...     assert np.unique(x).size == 6 and np.abs(x).min() >= 0.5
    >>> test_inputs_away_from_zero()
    """
    st = _hypothesis_strategies()
    if not (scale > 0 and min_abs >= 0):
        raise ValueError(f"need scale > 0 and min_abs >= 0; got scale={scale}, min_abs={min_abs}")
    shapes = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))

    def build(shape, seed):
        grid = distinct_values(np.random.default_rng(seed), shape, scale)
        return grid + min_abs * np.where(grid >= 0, 1.0, -1.0)  # distinct, |v| >= min_abs

    return st.builds(build, shapes, seeds())


def feature_map_shapes(
    *,
    batch: int | tuple[int, int] = (1, 2),
    channels: int | tuple[int, int] = (1, 4),
    min_side: int = 1,
    max_side: int = 5,
):
    """Strategy: (N, C, H, W) shapes, with H and W drawn independently.

    The ranges include the edge shapes where bugs hide (a batch of one, H = W = 1, H ≠ W);
    hypothesis tries the small ones first.

    Parameters
    ----------
    batch, channels : int or (low, high)
        A fixed size, or an inclusive range.
    min_side, max_side : int
        The range of H and of W.

    Examples
    --------
    >>> from hypothesis import given
    >>> from npcbam.testing import feature_map_shapes
    >>> @given(feature_map_shapes(channels=3))
    ... def test_shapes(shape):
    ...     n, c, h, w = shape
    ...     assert c == 3 and 1 <= n <= 2 and 1 <= h <= 5 and 1 <= w <= 5
    >>> test_shapes()
    """
    st = _hypothesis_strategies()
    sides = _integers(st, (min_side, max_side), "(min_side, max_side)")
    return st.tuples(
        _integers(st, batch, "batch"), _integers(st, channels, "channels"), sides, sides
    )


def feature_maps(
    *,
    batch: int | tuple[int, int] = (1, 2),
    channels: int | tuple[int, int] = (1, 4),
    min_side: int = 1,
    max_side: int = 5,
    scale: float = 2.0,
    min_abs: float = 0.0,
):
    """Strategy: tie-free float64 feature maps of shape (N, C, H, W): :func:`distinct_arrays`
    of :func:`feature_map_shapes` (see those for the parameters).

    Examples
    --------
    A global max pooling, checked on inputs whose spatial maxima have no ties:

    >>> from hypothesis import given
    >>> from npcbam.ops import global_max_pool_backward, global_max_pool_forward
    >>> from npcbam.testing import assert_gradients, feature_maps
    >>> @given(feature_maps(channels=4))
    ... def test_global_max_pool(x):
    ...     assert_gradients(global_max_pool_forward, global_max_pool_backward, {"x": x})
    >>> test_global_max_pool()
    """
    shapes = feature_map_shapes(
        batch=batch, channels=channels, min_side=min_side, max_side=max_side
    )
    return distinct_arrays(shapes, scale=scale, min_abs=min_abs)


def channels_and_reduction(*, max_reduction: int = 4, max_hidden: int = 2):
    """Strategy: ``(C, r)`` for a layer with a bottleneck of width ``C // r``.

    ``C = r * hidden + extra`` with ``hidden`` in [1, ``max_hidden``] and ``extra`` in
    [0, r - 1]: the bottleneck is ``hidden`` wide, C = r (width 1) is included, and so are
    widths that r does not divide.

    Examples
    --------
    >>> from hypothesis import given
    >>> from npcbam.testing import channels_and_reduction
    >>> @given(channels_and_reduction())
    ... def test_widths(c_r):
    ...     c, r = c_r
    ...     assert 1 <= r <= 4 and 1 <= c // r <= 2
    >>> test_widths()
    """
    st = _hypothesis_strategies()
    reductions = _integers(st, (1, max_reduction), "max_reduction")
    hidden = _integers(st, (1, max_hidden), "max_hidden")

    def with_width(r):
        return st.tuples(hidden, st.integers(0, r - 1)).map(lambda he: (r * he[0] + he[1], r))

    return reductions.flatmap(with_width)
