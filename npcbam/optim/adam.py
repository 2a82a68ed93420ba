r"""Adam (Kingma & Ba, 2015) with L2 weight decay and the AMSGrad variant."""

from __future__ import annotations

import numpy as np

from npcbam.optim._base import Optimizer, fma, require_real


def lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    r"""``start + weight * (end - start)``, evaluated as PyTorch's CPU ``lerp`` kernel does.

    For :math:`|w| < 1/2` it is :math:`\mathrm{fma}(w, e - s, s)`, otherwise
    :math:`\mathrm{fma}(w - 1, e - s, e)` (anchored at the nearer end, which is exact at
    :math:`w = 1`).
    """
    diff = end - start
    if abs(weight) < 0.5:
        return fma(weight, diff, start)
    return fma(weight - 1.0, diff, end)


class Adam(Optimizer):
    r"""Adam, with the update rule of ``torch.optim.Adam`` (PyTorch 2.13).

    At step :math:`t = 1, 2, \ldots` with gradient :math:`g_t` of parameter
    :math:`\theta_{t-1}`, and :math:`m_0 = v_0 = \hat v_0^{\max} = 0`:

    .. math::

        g_t &\leftarrow g_t + \lambda \theta_{t-1} \qquad (\text{if } \lambda \neq 0) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \hat v^{\max}_t &= \max(\hat v^{\max}_{t-1}, v_t) \qquad (\text{amsgrad; then }
            v_t \text{ below means } \hat v^{\max}_t) \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \,
            \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    with learning rate :math:`\gamma`, moment decay rates :math:`\beta_1, \beta_2`, and L2
    weight decay :math:`\lambda` added to the gradient (``torch.optim.Adam``; *not* the
    decoupled decay of AdamW). The last line is Kingma & Ba's
    :math:`\theta_t = \theta_{t-1} - \gamma \hat m_t / (\sqrt{\hat v_t} + \epsilon)` with the
    bias corrections :math:`\hat m_t = m_t / (1 - \beta_1^t)`, :math:`\hat v_t = v_t / (1 -
    \beta_2^t)` arranged as PyTorch computes them (so :math:`\epsilon` is added to
    :math:`\sqrt{\hat v_t}`, exactly as in the paper).

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
    arXiv:1412.6980; Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018
    (AMSGrad); the PyTorch documentation of ``torch.optim.Adam``,
    https://docs.pytorch.org/docs/stable/generated/torch.optim.Adam.html.

    Parameters
    ----------
    params : Module or (dict, dict)
        An npcbam module (its ``parameters()`` and ``grads``), or a pair ``(params, grads)`` of
        dicts name -> float64 ndarray with the same keys and shapes. Parameters are updated in
        place; gradients are only read.
    lr : float, default 1e-3
        Learning rate :math:`\gamma` >= 0 (the attribute :attr:`lr` may be changed between
        steps).
    betas : (float, float), default (0.9, 0.999)
        :math:`(\beta_1, \beta_2)`, each in [0, 1).
    eps : float, default 1e-8
        :math:`\epsilon` >= 0, added to the denominator.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda` >= 0, added to the gradient.
    amsgrad : bool, default False
        Normalise by the running maximum of :math:`v_t` (AMSGrad).

    Notes
    -----
    Operation order and rounding mirror PyTorch's single-tensor CPU path (``_single_tensor_adam``,
    the one PyTorch takes by default for CPU tensors), line by line:

    - ``grad.add(param, alpha=λ)`` is :math:`\mathrm{fma}(\lambda, \theta, g)`;
    - ``exp_avg.lerp_(grad, 1 - β1)`` is :func:`lerp`, a fused multiply-add;
    - ``exp_avg_sq.mul_(β2).addcmul_(grad, grad, value=1 - β2)`` is
      :math:`\mathrm{fma}((1 - \beta_2) g, g, \beta_2 v)`;
    - the bias corrections are Python floats: ``1 - β1 ** t``, ``1 - β2 ** t``,
      ``step_size = lr / bias_correction1``, ``bias_correction2 ** 0.5``;
    - ``denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)`` (of the maximum with amsgrad);
    - ``param.addcdiv_(exp_avg, denom, value=-step_size)`` is
      :math:`\theta + ((-\text{step\_size}) \, m) / \text{denom}`.

    :func:`~npcbam.optim._base.fma` is computed exactly. The one operation not mirrored bit for
    bit is the square root: NumPy's is correctly rounded, while PyTorch's float64 ``sqrt`` on
    CPU (in its x86 builds, Intel MKL's vector sqrt) is an ulp off for about 1.5 % of the
    entries, which moves the corresponding update by about 2e-16 of its size; the parameter
    then differs from PyTorch's in the last bit at most, and only now and then.

    Examples
    --------
    >>> import numpy as np
    >>> from npcbam.optim import Adam
    >>> w, dw = np.array([1.0, -2.0]), np.array([0.5, -3.0])
    >>> opt = Adam((dict(w=w), dict(w=dw)), lr=0.1)
    >>> opt.step(); w.round(6)  # the first step moves each entry by about lr * sign(g)
    array([ 0.9, -1.9])
    """

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        amsgrad: bool = False,
    ) -> None:
        lr = require_real(lr, "lr", low=0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = require_real(betas[0], "betas[0]", low=0.0, high=1.0, high_open=True)
        self.beta2 = require_real(betas[1], "betas[1]", low=0.0, high=1.0, high_open=True)
        self.eps = require_real(eps, "eps", low=0.0)
        self.weight_decay = require_real(weight_decay, "weight_decay", low=0.0)
        if not isinstance(amsgrad, (bool, np.bool_)):
            raise TypeError(f"amsgrad must be a bool, got {amsgrad!r}")
        self.amsgrad = bool(amsgrad)
        super().__init__(params, lr)

    @property
    def betas(self) -> tuple[float, float]:
        r""":math:`(\beta_1, \beta_2)`."""
        return self.beta1, self.beta2

    def _update(self, state: dict, param: np.ndarray, grad: np.ndarray) -> None:
        if not state:
            state["exp_avg"] = np.zeros_like(param)
            state["exp_avg_sq"] = np.zeros_like(param)
            if self.amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(param)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]

        if self.weight_decay != 0:
            grad = fma(self.weight_decay, param, grad)  # a new array: the buffer is only read
        exp_avg[...] = lerp(exp_avg, grad, 1.0 - self.beta1)
        exp_avg_sq *= self.beta2
        exp_avg_sq[...] = fma((1.0 - self.beta2) * grad, grad, exp_avg_sq)

        step = float(self.steps)
        bias_correction1 = 1.0 - self.beta1**step
        bias_correction2 = 1.0 - self.beta2**step
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5

        if self.amsgrad:
            second = state["max_exp_avg_sq"]
            np.maximum(second, exp_avg_sq, out=second)
        else:
            second = exp_avg_sq
        denom = np.sqrt(second) / bias_correction2_sqrt + self.eps
        param += (-step_size * exp_avg) / denom

    def _hyperparameters(self) -> str:
        return (
            f"lr={self.lr!r}, betas=({self.beta1!r}, {self.beta2!r}), eps={self.eps!r}, "
            f"weight_decay={self.weight_decay!r}, amsgrad={self.amsgrad}"
        )
