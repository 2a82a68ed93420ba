r"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 decay."""

from __future__ import annotations

import numpy as np

from npcbam.optim._base import Optimizer, fma, require_real


class SGD(Optimizer):
    r"""Stochastic gradient descent, with the update rule of ``torch.optim.SGD`` (PyTorch 2.13).

    At step :math:`t` with gradient :math:`g_t` of parameter :math:`\theta_{t-1}`:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \qquad (\text{if } \lambda \neq 0) \\
        b_t &= \begin{cases} g_t & t = 1 \\
                             \mu b_{t-1} + (1 - \tau) g_t & t > 1 \end{cases}
               \qquad (\text{if } \mu \neq 0) \\
        g_t &\leftarrow \begin{cases} g_t + \mu b_t & \text{nesterov} \\
                                      b_t & \text{otherwise} \end{cases}
               \qquad (\text{if } \mu \neq 0) \\
        \theta_t &= \theta_{t-1} - \gamma g_t

    with learning rate :math:`\gamma`, weight decay :math:`\lambda`, momentum :math:`\mu` and
    dampening :math:`\tau`. The momentum buffer starts as the first gradient itself, without
    dampening. This is the algorithm of the PyTorch documentation (``torch.optim.SGD``,
    https://docs.pytorch.org/docs/stable/generated/torch.optim.SGD.html), after Sutskever,
    Martens, Dahl & Hinton, "On the importance of initialization and momentum in deep
    learning", ICML 2013, with one difference PyTorch documents: the buffer accumulates
    gradients and the learning rate scales the step, where Sutskever et al. accumulate
    :math:`\gamma g_t` (the two agree while :math:`\gamma` is constant).

    Parameters
    ----------
    params : Module or (dict, dict)
        An npcbam module (its ``parameters()`` and ``grads``), or a pair ``(params, grads)`` of
        dicts name -> float64 ndarray with the same keys and shapes. Parameters are updated in
        place; gradients are only read.
    lr : float
        Learning rate :math:`\gamma` >= 0 (the attribute :attr:`lr` may be changed between
        steps).
    momentum : float, default 0
        Momentum factor :math:`\mu` >= 0.
    dampening : float, default 0
        Dampening :math:`\tau` of the momentum (not applied on the first step).
    weight_decay : float, default 0
        L2 penalty :math:`\lambda` >= 0, added to the gradient.
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.

    Notes
    -----
    Operation order and rounding mirror PyTorch's single-tensor CPU path (``_single_tensor_sgd``,
    the one PyTorch takes by default for CPU tensors). The lines ``grad.add(param, alpha=λ)``,
    ``buf.mul_(μ).add_(grad, alpha=1 - τ)``, ``grad.add(buf, alpha=μ)`` (Nesterov) and
    ``param.add_(grad, alpha=-γ)`` each end in one fused multiply-add in PyTorch's CPU
    kernels, so here each is :func:`~npcbam.optim._base.fma`. Every operation is then
    correctly rounded on both sides, and the float64 results match PyTorch's bit for bit.

    Examples
    --------
    >>> import numpy as np
    >>> from npcbam.optim import SGD
    >>> w, dw = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    >>> opt = SGD((dict(w=w), dict(w=dw)), lr=0.1, momentum=0.9)
    >>> opt.step(); w
    array([ 0.95, -2.05])
    >>> opt.step(); w  # buffer 0.9 * 0.5 + 0.5 = 0.95
    array([ 0.855, -2.145])
    """

    def __init__(
        self,
        params,
        lr,
        momentum=0.0,
        dampening=0.0,
        weight_decay=0.0,
        nesterov: bool = False,
    ) -> None:
        self.momentum = require_real(momentum, "momentum", low=0.0)
        self.dampening = require_real(dampening, "dampening")
        self.weight_decay = require_real(weight_decay, "weight_decay", low=0.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(
                "nesterov=True needs momentum > 0 and dampening == 0, got "
                f"momentum={self.momentum!r}, dampening={self.dampening!r}"
            )
        super().__init__(params, lr)

    def _update(self, state: dict, param: np.ndarray, grad: np.ndarray) -> None:
        if self.weight_decay != 0:
            grad = fma(self.weight_decay, param, grad)  # a new array: the buffer is only read
        if self.momentum != 0:
            if "momentum_buffer" not in state:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= self.momentum
                buf[...] = fma(1.0 - self.dampening, grad, buf)
            grad = fma(self.momentum, buf, grad) if self.nesterov else buf
        param[...] = fma(-self.lr, grad, param)

    def _hyperparameters(self) -> str:
        return (
            f"lr={self.lr!r}, momentum={self.momentum!r}, dampening={self.dampening!r}, "
            f"weight_decay={self.weight_decay!r}, nesterov={self.nesterov}"
        )
