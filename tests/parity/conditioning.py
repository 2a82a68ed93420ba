r"""How far a problem's exact results move when its inputs are rounded: the conditioning screen
of the parity fixtures and tests (no torch needed).

A result computed in a precision with unit roundoff u cannot be held to a bound tighter than
what rounding its inputs alone does to it. A parameter gradient that is a sum of many terms
nearly cancelling (a BatchNorm's weight gradient :math:`\sum \bar y\,\hat x` with
:math:`\sum |\bar y\,\hat x| / |\sum \bar y\,\hat x|` in the hundreds) turns relative
input errors of u into a relative error of hundreds of u, whoever computes it: PyTorch's own
float32 result may then be close to the exact one by luck, and an equally correct one not. The
screen measures that amplification directly, without knowing how each result is computed: it
recomputes the results in float64 with every input, every layer's output and every layer's
output gradient multiplied by :math:`1 + u\,\delta`, :math:`\delta` uniform in [-1, 1] (a
rounding at each step), and reports the largest change, in the measure of the comparison
itself (:func:`parity.stored.errors_against`). A problem whose results move by more
than a tenth of the comparison's bound is not a test of the implementation, as a ReLU input next
to 0 or a BatchNorm batch of nearly equal values is not, and is set aside the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from parity.stored import errors_against

#: Unit roundoff of float32 and of float64: the relative size of one rounding.
UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}


def rounded(value: np.ndarray, unit: float, rng: np.random.Generator) -> np.ndarray:
    """``value`` with every entry moved by a random relative amount of at most ``unit``
    (integer arrays, such as ``num_batches_tracked``, unchanged)."""
    value = np.asarray(value)
    if not np.issubdtype(value.dtype, np.floating):
        return value
    return value * (1 + unit * rng.uniform(-1, 1, value.shape))


def sensitivity(
    results_of: Callable[[tuple[float, np.random.Generator] | None], dict],
    unit: float,
    scale_key=lambda key: None,
    draws: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """The largest change of each result over ``draws`` random roundings of relative size
    ``unit``, measured as :func:`~parity.stored.errors_against` measures (``scale_key`` as
    there).

    ``results_of(rounding)`` computes the results in float64: exactly with ``None``, and with
    ``rounding = (unit, rng)`` moving every input, and every intermediate it can reach, by
    :func:`rounded` (:func:`parity.torch_bam.torch_results` does so through hooks). Use
    PyTorch's reference here, not npcbam: the screen must not depend on the code it screens
    for.
    """
    rng = np.random.default_rng(seed)
    exact = results_of(None)
    largest = dict.fromkeys(exact, 0.0)
    for _ in range(draws):
        changes = errors_against(exact, results_of((unit, rng)), scale_key)
        for key, change in changes.items():
            largest[key] = max(largest[key], change)
    return largest
