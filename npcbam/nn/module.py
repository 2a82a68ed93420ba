"""The module protocol: parameters, gradients, PyTorch-style state_dict, forward and backward.

A module owns float64 parameters and gradient buffers of the same shapes, and caches what its
last ``forward`` needs for ``backward``. Each forward/backward computes in the *input's* dtype
(float32 or float64); parameter gradients are accumulated into the float64 buffers, as PyTorch
accumulates into ``.grad`` until ``zero_grad()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from npcbam._checks import require_float_array, require_ndim


def collect_winners(cache, path: str = "") -> dict[str, np.ndarray]:
    """Find every ``winners`` field (max indices, ReLU masks) in a nest of caches.

    Caches are NamedTuples (possibly holding other caches, lists or tuples); the returned
    keys are the dotted field paths, e.g. ``"mlp_avg_cache.relu_cache.winners"``.
    """
    found: dict[str, np.ndarray] = {}
    if hasattr(cache, "_fields"):  # a NamedTuple: walk its named fields
        for field, value in zip(cache._fields, cache):
            key = f"{path}.{field}" if path else field
            if field == "winners":
                found[key] = value
            else:
                found.update(collect_winners(value, key))
    elif isinstance(cache, (list, tuple)):
        for i, value in enumerate(cache):
            found.update(collect_winners(value, f"{path}.{i}" if path else str(i)))
    return found


class Module:
    """Base class of npcbam's layers.

    Subclasses register parameters and children in ``__init__`` and implement
    ``check_input(x)``, ``_forward(x)`` (which stores ``self._cache``) and ``_backward(dout)``.
    The public :meth:`forward` and :meth:`backward` check shapes and dtypes first; each
    subclass rejects non-finite values itself (:func:`npcbam._checks.require_finite`, with a
    reduction it computes anyway as a free first test) before it changes any state. A rejected
    call leaves the module exactly as it was.
    """

    def __init__(self) -> None:
        self._params: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}
        self._children: list[tuple[str, Module]] = []
        self._cache = None
        self._output_spec: tuple[tuple[int, ...], np.dtype] | None = None
        self.training = True

    # -- construction -------------------------------------------------------------------------
    def register_parameter(self, name: str, value: np.ndarray) -> None:
        """Store ``value`` as a float64 parameter named ``name`` with a zero gradient buffer."""
        self._params[name] = np.array(value, dtype=np.float64)
        self._grads[name] = np.zeros_like(self._params[name])

    def register_child(self, prefix: str, module: Module) -> None:
        """Add a submodule; its names appear as ``prefix.name`` (or unchanged if prefix is "")."""
        self._children.append((prefix, module))

    def _named(self, table: str) -> Iterator[tuple[str, np.ndarray]]:
        yield from getattr(self, table).items()
        for prefix, child in self._children:
            for name, value in child._named(table):
                yield (f"{prefix}.{name}" if prefix else name), value

    # -- parameters and gradients -------------------------------------------------------------
    def parameters(self) -> dict[str, np.ndarray]:
        """The live float64 parameter arrays by PyTorch name (writes change the module)."""
        return dict(self._named("_params"))

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The live float64 gradient buffers, same keys and shapes as :meth:`state_dict`."""
        return dict(self._named("_grads"))

    def zero_grad(self) -> None:
        """Set every gradient buffer to zero (in place)."""
        for grad in self.grads.values():
            grad.fill(0.0)

    def accumulate_grad(self, name: str, value: np.ndarray) -> None:
        """Add ``value`` (reshaped to the parameter's shape) to this module's gradient ``name``."""
        grad = self._grads[name]
        grad += value.reshape(grad.shape)

    def param_as(self, name: str, dtype: np.dtype) -> np.ndarray:
        """Parameter ``name`` in the compute dtype (a float32 copy, or the float64 array itself)."""
        return self._params[name].astype(dtype, copy=False)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, keyed and shaped as the seed's PyTorch module."""
        return {name: value.copy() for name, value in self._named("_params")}

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray]) -> None:
        """Load parameters from a mapping of PyTorch names to arrays (float32 or float64).

        Every problem is collected first (missing, unexpected, wrong-shape, non-float or
        non-finite entries) and reported in one ``ValueError``; nothing is changed unless the
        whole mapping is valid. Values are stored as float64.
        """
        params = self.parameters()
        problems = []
        missing = sorted(set(params) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(params))
        if missing:
            problems.append(f"missing keys: {missing}")
        if unexpected:
            problems.append(f"unexpected keys: {unexpected} (expected exactly {sorted(params)})")
        arrays = {}
        for name in sorted(set(params) & set(state_dict)):
            value = np.asarray(state_dict[name])
            if value.shape != params[name].shape:
                problems.append(f"{name}: shape {value.shape}, expected {params[name].shape}")
            elif not np.issubdtype(value.dtype, np.floating):
                problems.append(f"{name}: dtype {value.dtype}, expected a floating dtype")
            elif not np.isfinite(value).all():
                problems.append(f"{name}: holds non-finite values")
            else:
                arrays[name] = value
        if problems:
            raise ValueError(
                f"cannot load state_dict into {type(self).__name__}; nothing was changed:\n  "
                + "\n  ".join(problems)
            )
        for name, value in arrays.items():
            np.copyto(params[name], value)

    # -- modes --------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and its children; returns ``self``."""
        self.training = mode
        for _, child in self._children:
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``); returns ``self``."""
        return self.train(False)

    # -- forward and backward -----------------------------------------------------------------
    def check_input(self, x) -> np.ndarray:
        """Validate ``x`` and return it as an ndarray; raise a clear error otherwise."""
        raise NotImplementedError

    def _forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x) -> np.ndarray:
        """Validate ``x``, compute the output in ``x``'s dtype and cache what backward needs."""
        x = self.check_input(x)
        out = self._forward(x)
        self._output_spec = (out.shape, out.dtype)
        return out

    def __call__(self, x) -> np.ndarray:
        """``m(x)`` is ``m.forward(x)``."""
        return self.forward(x)

    def backward(self, dout) -> np.ndarray:
        """Gradient of the loss with respect to the last forward's input.

        ``dout`` is the gradient with respect to the last output (same shape). Parameter
        gradients are *added* to :attr:`grads` (call :meth:`zero_grad` between steps).
        """
        if self._output_spec is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before any forward(): there is no "
                "cached forward pass to differentiate"
            )
        shape, dtype = self._output_spec
        dout = require_float_array(dout, "dy")
        if dout.shape != shape:
            raise ValueError(f"dy has shape {dout.shape}; expected the last output's shape {shape}")
        return self._backward(dout.astype(dtype, copy=False))

    def _last_cache(self, what: str):
        """The last forward's cache, or a ``RuntimeError`` naming ``what`` needs it."""
        if self._cache is None:
            raise RuntimeError(f"no {what} yet: call forward() first")
        return self._cache

    def winners(self) -> dict[str, np.ndarray]:
        """The kink state of the last forward: every max's argmax and every ReLU's mask.

        If any of these changes when an input moves by ±h, a finite difference across that
        step is meaningless; :func:`npcbam.check_gradients` uses this to flag such coordinates.
        """
        found = collect_winners(self._cache)
        for prefix, child in self._children:
            for key, value in child.winners().items():
                found[f"{prefix or type(child).__name__}.{key}"] = value
        return found

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.shape}" for k, v in self._named("_params"))
        return f"{type(self).__name__}({shapes})"


def check_feature_map(x, channels: int | None = None) -> np.ndarray:
    """Validate a feature map: an (N, C, H, W) float32/float64 array, C = ``channels``."""
    x = require_float_array(x, "x")
    require_ndim(x, 4, "x", "(N, C, H, W)")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"x has {x.shape[1]} channels (shape {x.shape}); this module was built for "
            f"{channels} channels"
        )
    if 0 in x.shape:
        raise ValueError(f"x has shape {x.shape}; every dimension must be at least 1")
    return x
