r"""Gating (broadcast multiply) and concatenation.

Gating is where CBAM applies an attention map: ``out = x * gate`` with the gate broadcast over
the axes where it has size 1 ((N, C, 1, 1) for channel attention, (N, 1, H, W) for spatial).
By the product rule each factor's gradient is the upstream gradient times the *other* factor;
the gate's is then summed over the axes along which it was broadcast.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import quiet_floats, require_finite_result, require_op_array, require_shape


class GateCache(NamedTuple):
    x: np.ndarray  # (N, C, H, W)
    gate: np.ndarray  # broadcastable to x, e.g. (N, C, 1, 1) or (N, 1, H, W)


@quiet_floats
def gate_forward(x: np.ndarray, gate: np.ndarray) -> tuple[np.ndarray, GateCache]:
    r"""Multiply a feature map by an attention map.

    .. math:: y = g \odot x \quad (g \text{ broadcast to } x\text{'s shape})

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    gate : ndarray, same number of dimensions as ``x``, each axis of size 1 or ``x``'s size

    Returns
    -------
    out : ndarray, shape of ``x``
    cache : GateCache

    Checks: ``x`` and ``gate`` float32 or float64, no empty axis, ``gate`` broadcasting to
    ``x`` axis by axis (else ``TypeError`` / ``ValueError``); ``gate`` (small) must be finite.
    ``x`` is not scanned (that would take a pass; its NaN or inf reach ``out``); when some
    :math:`|g| > 1` (never for a sigmoid gate) the output is checked for overflow.
    """
    x = require_op_array(x, "x")
    gate = require_op_array(gate, "gate")
    if gate.ndim != x.ndim or any(g not in (1, s) for g, s in zip(gate.shape, x.shape)):
        raise ValueError(f"gate of shape {gate.shape} does not broadcast to x of shape {x.shape}")
    require_finite_result("gate_forward", gate, {"gate": gate})
    out = x * gate
    if np.abs(gate).max() > 1:  # only then can |x * gate| exceed |x|
        require_finite_result("gate_forward", out, {"x": x, "gate": gate})
    return out, GateCache(x, gate)


@quiet_floats
def gate_backward(
    dout: np.ndarray, cache: GateCache, dout_name: str = "dout"
) -> tuple[np.ndarray, np.ndarray]:
    r"""Product rule, then un-broadcast the gate's gradient.

    .. math::

        \frac{\partial L}{\partial x} = \frac{\partial L}{\partial y} \odot g, \qquad
        \frac{\partial L}{\partial g} = \sum_{\text{broadcast axes}}
            \frac{\partial L}{\partial y} \odot x

    Parameters
    ----------
    dout : ndarray, shape of ``x``
    cache : GateCache
    dout_name : str
        What the errors call ``dout``: a module whose backward starts here passes ``"dy"``,
        its caller's name for it (:attr:`npcbam.nn.Module.checks_dy_first`).

    Returns
    -------
    dx : ndarray, shape of ``x``
    dgate : ndarray, shape of ``gate``

    Checks: ``dout`` has the shape of ``x``; every entry of ``dout`` and ``x`` meets ``dgate``,
    so a NaN or inf in either (or an overflow) is found there at no extra pass and raises
    ``ValueError`` before anything else is computed from ``dgate``; ``dx`` is checked for
    overflow only when some :math:`|g| > 1`.
    """
    x, gate = cache
    require_shape(dout, x.shape, dout_name, "the shape of x")
    dx = dout * gate
    # sum of dout * x over the broadcast axes, e.g. "abcd,abcd->ab" for a (N, C, 1, 1) gate:
    # einsum multiplies and adds in one sweep, with no full-size temporary for dout * x
    axes = "abcdefghij"[: x.ndim]
    kept = "".join(axis for axis, g, s in zip(axes, gate.shape, x.shape) if g == s)
    dgate = np.einsum(f"{axes},{axes}->{kept}", dout, x).reshape(gate.shape)
    require_finite_result("gate_backward", dgate, {dout_name: dout, "x": x})
    if np.abs(gate).max() > 1:
        require_finite_result("gate_backward", dx, {dout_name: dout, "gate": gate})
    return dx, dgate


class ConcatCache(NamedTuple):
    sizes: tuple[int, ...]  # size of each part along ``axis``
    axis: int


def concat_forward(parts: list[np.ndarray], axis: int = 1) -> tuple[np.ndarray, ConcatCache]:
    r"""Concatenate along ``axis`` (CBAM stacks the max- and mean-pooled maps on axis 1).

    .. math:: s = [\,\hat{s} \,;\, \bar{s}\,] \quad\text{e.g. } (N,1,H,W), (N,1,H,W)
              \to (N,2,H,W)

    Parameters
    ----------
    parts : list of ndarray, equal shapes except along ``axis``
    axis : int

    Returns
    -------
    out : ndarray
    cache : ConcatCache
    """
    return np.concatenate(parts, axis=axis), ConcatCache(tuple(p.shape[axis] for p in parts), axis)


def concat_backward(dout: np.ndarray, cache: ConcatCache) -> list[np.ndarray]:
    r"""Each part gets back its own slice of the upstream gradient.

    Parameters
    ----------
    dout : ndarray, shape of the concatenation
    cache : ConcatCache

    Returns
    -------
    dparts : list of ndarray, the shapes of ``parts``
    """
    boundaries = np.cumsum(cache.sizes)[:-1]
    return np.split(dout, boundaries, axis=cache.axis)
