r"""Finite-difference gradient checking, with a per-tensor report.

The scalar being differentiated is :math:`L = \langle G, f(\theta)\rangle = \sum G \odot f`
for a fixed random upstream gradient :math:`G` with distinct entries (never all ones, which
hides transposed or permuted gradients). For each checked tensor :math:`\theta`:

* **full** mode compares every element with a central difference, by default of order 4

  .. math:: n_i = \frac{-L(\theta + 2h e_i) + 8L(\theta + h e_i) - 8L(\theta - h e_i)
                  + L(\theta - 2h e_i)}{12h}

  (``order=2`` gives the classic :math:`(L(\theta + h e_i) - L(\theta - h e_i)) / 2h`).
  The outputs are combined before they are projected on :math:`G`, which cancels less;

* **sample** mode compares the same quotient on a random subset of elements;

* **random-direction** mode (for large tensors) compares directional derivatives along random
  unit-variance directions :math:`u`: :math:`\langle \nabla_\theta L, u\rangle` (analytic)
  against the same difference quotient along :math:`u`, the fast mode of
  ``torch.autograd.gradcheck`` and JAX's ``check_grads``.

An element (or direction) passes when :math:`|a - n| \le \text{atol} + \text{rtol}\,|n|`.
Its relative error is :math:`|a - n| / \max(|a|, |n|, \text{atol}/\text{rtol})`: below the
noise scale atol/rtol an entry is judged in absolute terms (a true zero gradient has no
meaningful relative error).

Kinks: a max's winner or a ReLU's side can change between :math:`\theta \pm h`; the difference
quotient is then meaningless. Every forward's ``winners`` (recorded in the caches) are compared
with the unperturbed ones; a coordinate whose winners change is **flagged and counted**, not
compared, and never absorbed by a looser tolerance.

Everything runs in float64: float32 rounding (~1e-7) divided by h would swamp the comparison.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from npcbam._checks import require_int
from npcbam.nn.module import collect_winners

DEFAULT_H = 1e-4
DEFAULT_ORDER = 4
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-9
DEFAULT_MAX_FULL = 4096  # tensors with more elements use random directions in "auto" mode

# Central difference stencils: (offset in units of h, weight); f'(t) ~ sum(w * f(t + k h)) / h.
# Order 2 errs by h^2 f'''(t) / 6, order 4 by h^4 f^(5)(t) / 30: order 4 tolerates a larger h,
# and a larger h means less rounding noise (rounding in f is amplified by 1/h).
STENCILS = {
    2: ((1, 1 / 2), (-1, -1 / 2)),
    4: ((2, -1 / 12), (1, 8 / 12), (-1, -8 / 12), (-2, 1 / 12)),
}


@dataclass(frozen=True)
class Settings:
    """How a check is run (see :func:`check_gradients` for each field)."""

    mode: str = "auto"
    h: float = DEFAULT_H
    order: int = DEFAULT_ORDER
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    max_full: int = DEFAULT_MAX_FULL
    n_directions: int = 16
    n_samples: int = 8

    def __post_init__(self):
        if self.mode not in ("auto", "full", "sample", "random"):
            raise ValueError(f"mode={self.mode!r}; expected 'auto', 'full', 'sample' or 'random'")
        if self.order not in STENCILS:
            raise ValueError(f"order={self.order!r}; expected one of {sorted(STENCILS)}")
        _require_real(self.h, "h", "a finite step h > 0", lambda h: 0 < h < math.inf)
        # rtol >= 1 would pass a gradient twice the true one (|2n - n| <= 1 * |n|)
        _require_real(self.rtol, "rtol", "a finite rtol with 0 < rtol < 1", lambda r: 0 < r < 1)
        _require_real(self.atol, "atol", "a finite atol >= 0", lambda a: 0 <= a < math.inf)
        require_int(self.max_full, "max_full", 0)
        require_int(self.n_directions, "n_directions", 1)
        require_int(self.n_samples, "n_samples", 1)


def _require_real(value, name: str, expected: str, accept: Callable[[float], bool]) -> None:
    """Raise unless ``value`` is a real number (not a bool) for which ``accept`` holds; the
    message names the setting, its value and ``expected`` (NaN fails every comparison)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} ({type(value).__name__}); expected {expected}")
    if not accept(float(value)):
        raise ValueError(f"{name}={value!r}; expected {expected}")


@dataclass(frozen=True)
class GradcheckRow:
    """One checked tensor: how many entries were compared, the worst errors, pass or fail.

    ``where`` is the index of the worst relative error (full mode) or the direction number
    (random-direction mode); ``kinks`` counts entries skipped because a winner changed.
    """

    name: str
    shape: tuple[int, ...]
    mode: str
    checked: int
    kinks: int
    max_abs_err: float
    max_rel_err: float
    where: tuple[int, ...] | int | None
    passed: bool


@dataclass
class GradcheckReport:
    """The result of a gradient check: one :class:`GradcheckRow` per tensor.

    ``passed`` is true when every row compared at least one entry and every compared entry
    passed. ``str(report)`` is a readable table.
    """

    title: str
    settings: Settings
    rows: list[GradcheckRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(row.passed for row in self.rows)

    @property
    def kinks(self) -> int:
        """Total number of entries or directions skipped because a winner changed."""
        return sum(row.kinks for row in self.rows)

    @property
    def max_rel_err(self) -> float:
        """The worst relative error over all rows."""
        return max((row.max_rel_err for row in self.rows), default=0.0)

    def __getitem__(self, name: str) -> GradcheckRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row named {name!r}; rows: {[r.name for r in self.rows]}")

    def __str__(self) -> str:
        s = self.settings
        header = (
            f"{self.title}\n  float64, central differences of order {s.order}, h={s.h:g}; "
            f"pass if |a-n| <= {s.atol:g} + {s.rtol:g}*|n|"
        )
        columns = ("tensor", "shape", "mode", "checked", "kinks", "max abs err", "max rel err")
        width = max([24, *(len(row.name) for row in self.rows)])
        lines = [
            header,
            f"{columns[0]:<{width}} {columns[1]:<16} {columns[2]:<6} {columns[3]:>7} "
            f"{columns[4]:>5} {columns[5]:>11} {columns[6]:>11}  {'where':<14} result",
        ]
        for row in self.rows:
            where = "-" if row.where is None else str(row.where).replace(" ", "")
            mode = {"full": "full", "sample": "sample", "random": "dirs"}[row.mode]
            result = "pass" if row.passed else "FAIL"
            if row.kinks:
                result += f" ({row.kinks} kink{'s' if row.kinks > 1 else ''} not compared)"
            lines.append(
                f"{row.name:<{width}} {str(row.shape).replace(' ', ''):<16} {mode:<6} "
                f"{row.checked:>7} {row.kinks:>5} {row.max_abs_err:>11.2e} "
                f"{row.max_rel_err:>11.2e}  {where:<14} {result}"
            )
        lines.append(f"{'PASSED' if self.passed else 'FAILED'} ({len(self.rows)} tensors)")
        return "\n".join(lines)


def upstream_gradient(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random upstream gradient with distinct entries (normal draws; distinctness checked)."""
    dout = rng.standard_normal(shape)
    if np.unique(dout).size != dout.size:  # probability zero, but a tie would hide bugs
        raise RuntimeError("upstream gradient drew a tie; use another seed")
    return dout


def _require_float64(array: np.ndarray, name: str) -> None:
    if np.asarray(array).dtype != np.float64:
        raise TypeError(
            f"{name} has dtype {np.asarray(array).dtype}; finite differences need float64 "
            f"(float32 rounding divided by h would swamp the check): pass "
            f"{name}.astype(np.float64)"
        )


def _winners_changed(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    return a.keys() != b.keys() or any(not np.array_equal(a[k], b[k]) for k in a)


def _compare(analytic, numeric, atol: float, rtol: float):
    """Element-wise errors and pass flags (see the module docstring for the definitions)."""
    abs_err = np.abs(analytic - numeric)
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), atol / rtol)
    return abs_err, abs_err / scale, abs_err <= atol + rtol * np.abs(numeric)


def _check_tensor(name, tensor, analytic, evaluate, dout, base_winners, settings, rng):
    """Compare ``analytic`` with central differences of ``<dout, f>`` w.r.t. ``tensor``.

    ``tensor`` is perturbed in place and restored exactly; ``evaluate()`` returns the output
    and the winners of a forward at the current values.
    """
    h = settings.h

    def difference_quotient(step: np.ndarray | float, index=None):
        original = tensor.copy() if index is None else tensor[index]
        combination, kink = 0.0, False
        for offset, weight in STENCILS[settings.order]:
            if index is None:
                np.copyto(tensor, original + offset * step)
            else:
                tensor[index] = original + offset * step
            out, winners = evaluate()
            # combine the outputs first, then project on dout: less cancellation than L+ - L-
            combination = combination + weight * out
            kink = kink or _winners_changed(winners, base_winners)
        if index is None:
            np.copyto(tensor, original)
        else:
            tensor[index] = original
        return np.vdot(dout, combination) / h, kink

    mode = settings.mode
    if mode == "auto":
        mode = "full" if tensor.size <= settings.max_full else "random"
    if mode in ("full", "sample"):
        indices = list(np.ndindex(*tensor.shape))
        if mode == "sample" and settings.n_samples < len(indices):
            chosen = rng.choice(len(indices), size=settings.n_samples, replace=False)
            indices = [indices[i] for i in np.sort(chosen)]
        numeric = np.zeros(len(indices))
        kinked = np.zeros(len(indices), dtype=bool)
        for i, index in enumerate(indices):
            numeric[i], kinked[i] = difference_quotient(h, index)
        compared_analytic = np.array([analytic[index] for index in indices])[~kinked]
        compared_numeric = numeric[~kinked]
        positions = np.array(indices, dtype=int).reshape(len(indices), -1)[~kinked]
    else:
        directions = [rng.standard_normal(tensor.shape) for _ in range(settings.n_directions)]
        results = [difference_quotient(h * u) for u in directions]
        kinked = np.array([k for _, k in results])
        compared_numeric = np.array([n for n, _ in results])[~kinked]
        compared_analytic = np.array([np.vdot(analytic, u) for u in directions])[~kinked]
        positions = np.flatnonzero(~kinked)

    abs_err, rel_err, ok = _compare(
        compared_analytic, compared_numeric, settings.atol, settings.rtol
    )
    worst = int(np.argmax(rel_err)) if rel_err.size else None
    where = None
    if worst is not None:
        where = (
            int(positions[worst]) if mode == "random" else tuple(int(i) for i in positions[worst])
        )
    return GradcheckRow(
        name=name,
        shape=tuple(tensor.shape),
        mode=mode,
        checked=int(compared_numeric.size),
        kinks=int(kinked.sum()),
        max_abs_err=float(abs_err.max(initial=0.0)),
        max_rel_err=float(rel_err.max(initial=0.0)),
        where=where,
        passed=bool(compared_numeric.size > 0 and ok.all()),
    )


def _run(title, tensors, analytic, evaluate, dout, seed, settings) -> GradcheckReport:
    rng = np.random.default_rng([seed, 1])  # directions: a stream apart from the upstream's
    _, base_winners = evaluate()
    report = GradcheckReport(title, settings=settings)
    for name, tensor in tensors.items():
        grad = np.asarray(analytic[name], dtype=np.float64)
        if grad.shape != tensor.shape:
            raise ValueError(
                f"analytic gradient of {name} has shape {grad.shape}, expected {tensor.shape}"
            )
        report.rows.append(
            _check_tensor(name, tensor, grad, evaluate, dout, base_winners, settings, rng)
        )
    return report


def check_gradients(
    module,
    x: np.ndarray,
    *,
    seed: int = 0,
    mode: str = "auto",
    h: float = DEFAULT_H,
    order: int = DEFAULT_ORDER,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_full: int = DEFAULT_MAX_FULL,
    n_directions: int = 16,
    n_samples: int = 8,
) -> GradcheckReport:
    """Check a module's backward against central finite differences.

    Checks the gradient with respect to the input (row ``"input"``) and to every parameter
    (rows named as in ``module.state_dict()``), each separately.

    Parameters
    ----------
    module : object with the npcbam module protocol
        ``forward(x)``, ``backward(dy)``, ``parameters()`` (live float64 arrays by name),
        ``grads``, ``zero_grad()``, and optionally ``winners()`` (kink state of the last
        forward).
    x : ndarray, float64
        The input; not modified.
    seed : int
        Seeds the upstream gradient and the random directions.
    mode : {"auto", "full", "sample", "random"}
        "full" checks every element, "sample" ``n_samples`` randomly chosen elements per
        tensor (CS231n's sparse check: one coordinate moves at a time, so far fewer kinks are
        crossed than along a direction that moves every coordinate), "random"
        ``n_directions`` random directions per tensor, "auto" picks "full" for tensors of at
        most ``max_full`` elements and "random" otherwise.
    h : float
        The finite-difference step, finite and > 0.
    order : {2, 4}
        Accuracy order of the central difference: 2 evaluations with error O(h^2), or 4 with
        error O(h^4) (the default: about 1e-11 to 1e-10 absolute error on small CBAMs, against
        1e-9 for order 2 at h = 1e-6).
    rtol, atol : float
        An entry passes when ``|a - n| <= atol + rtol * |n|``; ``0 < rtol < 1`` (an rtol of 1
        or more passes a gradient twice the true one) and ``atol >= 0``, both finite.
    max_full : int, >= 0
    n_directions, n_samples : int, >= 1
        Settings outside these ranges raise ``ValueError`` (``TypeError`` for a non-number)
        naming the setting and its value.

    Returns
    -------
    GradcheckReport
        ``report.passed``, ``report.rows``, ``str(report)`` for the table. The module's
        parameters and buffers (running statistics) are left exactly as they were, its
        gradients as they were before the call, and its cache holds a forward at ``x``.

    Examples
    --------
    >>> import numpy as np, npcbam
    >>> m = npcbam.CBAM(8, reduction=4, kernel_size=3, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((1, 8, 4, 5))
    >>> npcbam.check_gradients(m, x).passed
    True
    """
    settings = Settings(mode, h, order, rtol, atol, max_full, n_directions, n_samples)
    _require_float64(x, "x")
    params = module.parameters()
    for name, value in params.items():
        _require_float64(value, name)
    x_work = np.array(x, dtype=np.float64)
    saved_grads = {k: g.copy() for k, g in module.grads.items()}
    # a forward in training mode moves BatchNorm's running statistics: undone at the end
    buffers = getattr(module, "buffers", dict)()
    saved_buffers = {k: b.copy() for k, b in buffers.items()}
    winners = getattr(module, "winners", dict)

    def evaluate():
        return module.forward(x_work), winners()

    out = module.forward(x_work)
    dout = upstream_gradient(out.shape, np.random.default_rng(seed))
    module.zero_grad()
    analytic = {"input": module.backward(dout)}
    analytic.update({k: g.copy() for k, g in module.grads.items()})
    try:
        tensors = {"input": x_work, **params}
        return _run(repr(module), tensors, analytic, evaluate, dout, seed, settings)
    finally:
        for name, grad in module.grads.items():
            np.copyto(grad, saved_grads[name])
        module.forward(x_work)
        for name, buffer in buffers.items():
            np.copyto(buffer, saved_buffers[name])


def check_op_gradients(
    forward: Callable,
    backward: Callable,
    inputs: Mapping[str, np.ndarray],
    *,
    title: str | None = None,
    seed: int = 0,
    **settings,
) -> GradcheckReport:
    """Check a functional op pair ``forward(*inputs) -> (out, cache)``,
    ``backward(dout, cache) -> grads`` (one gradient per input, in order; a single array when
    there is one input).

    Bind non-differentiable arguments (stride, padding, ...) with a lambda or
    ``functools.partial``. Kinks are read from every ``winners`` field in the cache. The
    keyword ``settings`` are those of :func:`check_gradients` (``mode``, ``h``, ``order``,
    ``rtol``, ``atol``, ``max_full``, ``n_directions``, ``n_samples``).

    Examples
    --------
    >>> import numpy as np
    >>> from npcbam.ops import linear_forward, linear_backward
    >>> rng = np.random.default_rng(0)
    >>> report = check_op_gradients(
    ...     lambda x, w: linear_forward(x, w),
    ...     lambda d, c: linear_backward(d, c)[:2],
    ...     {"x": rng.standard_normal((3, 4)), "w": rng.standard_normal((2, 4))},
    ... )
    >>> report.passed
    True
    """
    settings = Settings(**settings)
    tensors = {}
    for name, value in inputs.items():
        _require_float64(value, name)
        tensors[name] = np.array(value, dtype=np.float64)

    def evaluate():
        out, cache = forward(*tensors.values())
        return out, collect_winners(cache)

    out, cache = forward(*tensors.values())
    dout = upstream_gradient(np.shape(out), np.random.default_rng(seed))
    grads = backward(dout, cache)
    if len(tensors) == 1 and isinstance(grads, np.ndarray):
        grads = (grads,)
    grads = tuple(grads)
    if len(grads) != len(tensors):
        raise ValueError(
            f"backward returned {len(grads)} gradients for {len(tensors)} inputs ({list(tensors)})"
        )
    analytic = dict(zip(tensors, grads))
    title = title or getattr(forward, "__name__", "op")
    return _run(title, tensors, analytic, evaluate, dout, seed, settings)


def distinct_values(rng: np.random.Generator, shape, scale: float = 2.0) -> np.ndarray:
    """A float64 array whose entries are a shuffled, evenly spaced grid in [-scale, scale].

    Every entry is distinct and neighbours are ``2 * scale / (size - 1)`` apart, so max-pooling
    has no ties and, for small tensors, a margin far wider than the finite-difference stencil:
    the inputs to use for a kink-free gradient check.
    """
    size = math.prod(shape)
    grid = np.linspace(-scale, scale, size) if size > 1 else np.array([scale / 3])
    return rng.permutation(grid).reshape(shape)


def randomize_batchnorms(module, rng: np.random.Generator):
    r"""Give every ``BatchNorm2d`` and ``BatchNorm1d`` in ``module`` random weights, biases and
    running statistics (in place; returns ``module``), for gradient checks.

    With the defaults (weight 1, bias 0) a train-mode BatchNorm gives every channel the same set
    of values, so a following max over channels meets exact ties; and evaluation mode with mean
    0 and variance 1 is nearly the identity, which would hide a mix-up of the statistics.
    Weights are :math:`1 + 0.3\,\mathcal N(0, 1)`, biases :math:`0.3\,\mathcal N(0, 1)`,
    running means :math:`0.2\,\mathcal N(0, 1)`, running variances :math:`\mathcal U(0.5, 1.5)`.
    """
    from npcbam.nn.batchnorm import BatchNorm1d, BatchNorm2d

    for _, layer in module.named_modules():
        if isinstance(layer, (BatchNorm2d, BatchNorm1d)):
            c = layer.num_features
            params, buffers = layer.parameters(), layer.buffers()
            params["weight"][:] = 1.0 + 0.3 * rng.standard_normal(c)
            params["bias"][:] = 0.3 * rng.standard_normal(c)
            buffers["running_mean"][:] = 0.2 * rng.standard_normal(c)
            buffers["running_var"][:] = rng.uniform(0.5, 1.5, c)
    return module
