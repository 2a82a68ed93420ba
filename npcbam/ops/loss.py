r"""Softmax cross-entropy: the classification loss, computed stably, with its gradient."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import quiet_floats, require_finite_result, require_float_array


class CrossEntropyCache(NamedTuple):
    probs: np.ndarray  # (N, K), softmax of the logits
    labels: np.ndarray  # (N,), int


@quiet_floats
def log_softmax(logits: np.ndarray) -> np.ndarray:
    r"""Row-wise :math:`\log \mathrm{softmax}(z)_k = z_k - m - \log\sum_j e^{z_j - m}` with
    :math:`m = \max_j z_j`: no exponential exceeds 1, so nothing overflows.

    Parameters
    ----------
    logits : ndarray, shape (N, K)

    Returns
    -------
    ndarray, shape (N, K)
    """
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K), every entry <= 0
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@quiet_floats
def softmax_cross_entropy_forward(
    logits: np.ndarray, labels: np.ndarray
) -> tuple[float, CrossEntropyCache]:
    r"""Mean cross-entropy of a softmax classifier (PyTorch's ``F.cross_entropy``).

    .. math:: L = -\frac{1}{N}\sum_n \log \mathrm{softmax}(z_n)_{y_n}

    Parameters
    ----------
    logits : ndarray, shape (N, K), float
    labels : ndarray, shape (N,), integers in [0, K)

    Returns
    -------
    loss : float
    cache : CrossEntropyCache

    Checks: ``logits`` float32 or float64 (N, K) with N, K >= 1, ``labels`` integers (N,) in
    [0, K), else ``TypeError`` / ``ValueError``; a NaN or ``+inf`` logit (or ``-inf`` at a
    row's label), found in the loss at no extra pass, raises ``ValueError``. Other ``-inf``
    logits are allowed: their probability is exactly 0.
    """
    logits = require_float_array(logits, "logits")
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (N, K) and labels (N,); got {logits.shape} and {labels.shape}"
        )
    if logits.size == 0:
        raise ValueError(f"logits have shape {logits.shape}; expected N >= 1 rows of K >= 1")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels have dtype {labels.dtype}; expected integers (class indices)")
    k = logits.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        bad = labels[(labels < 0) | (labels >= k)][0]
        raise ValueError(f"label {bad} is outside [0, {k}) for {k} classes")
    log_probs = log_softmax(logits)  # (N, K)
    loss = -log_probs[np.arange(labels.size), labels].mean()
    require_finite_result("softmax_cross_entropy_forward", loss, {"logits": logits})
    return float(loss), CrossEntropyCache(np.exp(log_probs), labels)


@quiet_floats
def softmax_cross_entropy_backward(dloss: float, cache: CrossEntropyCache) -> np.ndarray:
    r"""Gradient of the mean cross-entropy with respect to the logits.

    .. math:: \frac{\partial L}{\partial z_{nk}} = \frac{1}{N}\big(\mathrm{softmax}(z_n)_k
              - [k = y_n]\big)

    Parameters
    ----------
    dloss : float, the upstream gradient of the scalar loss (1.0 for the loss itself)
    cache : CrossEntropyCache

    Returns
    -------
    dlogits : ndarray, shape (N, K)

    Checks: ``dloss`` a finite real number; the gradient is checked finite (a ``dloss`` near
    the dtype's maximum would overflow it), else ``ValueError``.
    """
    require_finite_result("softmax_cross_entropy_backward", dloss, {"dloss": dloss})
    n = cache.labels.size
    dlogits = cache.probs.copy()  # (N, K)
    dlogits[np.arange(n), cache.labels] -= 1.0
    dlogits = dlogits * (dloss / n)
    require_finite_result("softmax_cross_entropy_backward", dlogits, {"dloss": dloss})
    return dlogits
