"""Optimizers with PyTorch's update rules: :class:`SGD` and :class:`Adam`.

Each takes an npcbam module (or a pair of dicts ``(params, grads)``), reads the gradient
buffers and updates the parameters in place on :meth:`~Optimizer.step`, in the operation order
of PyTorch 2.13's default CPU path, so that a float64 run matches PyTorch to rounding.

>>> import numpy as np, npcbam
>>> from npcbam.optim import Adam
>>> m = npcbam.CBAM(4, reduction=2, kernel_size=3, seed=0)
>>> opt = Adam(m, lr=1e-2)
>>> x = np.random.default_rng(0).standard_normal((2, 4, 5, 5))
>>> _ = m.backward(m(x) - x)  # gradients of 0.5 * ||m(x) - x||^2
>>> opt.step(); opt.zero_grad()
"""

from npcbam.optim._base import Optimizer, fma
from npcbam.optim.adam import Adam
from npcbam.optim.sgd import SGD

__all__ = ["SGD", "Adam", "Optimizer", "fma"]
