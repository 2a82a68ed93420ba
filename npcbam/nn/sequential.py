"""``Sequential``: layers applied one after the other; backward runs them in reverse."""

from __future__ import annotations

import numpy as np

from npcbam.nn.module import Module


class Sequential(Module):
    """A chain of modules, ``torch.nn.Sequential``: state dict keys ``0.``, ``1.``, ...

    Forward: :math:`y = f_{K-1}(\\cdots f_1(f_0(x)))`. Backward applies the chain rule in
    reverse: each module's ``backward`` turns the gradient of its output into that of its
    input.

    Parameters
    ----------
    *modules : Module
        At least one.
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if not modules:
            raise ValueError("Sequential needs at least one module")
        for index, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential item {index} is a {type(module).__name__}; expected an "
                    "npcbam Module"
                )
            self.register_child(str(index), module)
        self.layers = list(modules)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def check_input(self, x) -> np.ndarray:
        return self.layers[0].check_input(x)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout
