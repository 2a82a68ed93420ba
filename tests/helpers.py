"""Shared test helpers: the public machinery of :mod:`npcbam.testing` under the names the suite
uses, plus two margins specific to CBAM's shared MLP."""

from __future__ import annotations

import numpy as np

from npcbam import testing
from npcbam.gradcheck import distinct_values
from npcbam.testing import MAX_REL_ERR, SAFE_MARGIN, relative_error, top2_gap
from npcbam.testing import assert_report as assert_gradients_match

__all__ = [
    "EXACT",
    "MAX_REL_ERR",
    "SAFE_MARGIN",
    "assert_gradients_match",
    "distinct_values",
    "kink_margin",
    "relative_error",
    "relu_margin",
    "seeds",
    "top2_gap",
]

EXACT = {"rtol": 1e-12, "atol": 1e-12}  # vectorized op vs its loop oracle, both float64

seeds = testing.seeds()


def relu_margin(x: np.ndarray, w_hidden: np.ndarray) -> float:
    """Smallest |pre-activation| of CBAM's shared-MLP ReLU, over the average- and the
    max-pooled branch (:func:`npcbam.testing.relu_margin` of both).

    ``x`` is (N, C, H, W), ``w_hidden`` the ``mlp.0.weight`` (C/r, C, 1, 1).
    """
    n, c = x.shape[:2]
    pooled = np.concatenate([x.mean(axis=(2, 3)), x.reshape(n, c, -1).max(axis=2)])  # (2N, C)
    return testing.relu_margin(pooled @ w_hidden.reshape(-1, c).T)  # (2N, C/r)


def kink_margin(x: np.ndarray, refined: np.ndarray, w_hidden: np.ndarray) -> float:
    """How far CBAM's input is from every kink it meets: the global spatial max's top-2 gap on
    ``x``, the channel max's top-2 gap on ``refined`` (the channel-gated map, which is what
    spatial attention maxes), and :func:`relu_margin`."""
    maxima = [(x, (2, 3)), (refined, 1)]
    return min(testing.kink_margin(maxima=maxima), relu_margin(x, w_hidden))
