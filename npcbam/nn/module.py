"""The module protocol: parameters, gradients, PyTorch-style state_dict, forward and backward.

A module owns float64 parameters and gradient buffers of the same shapes, and caches what its
last ``forward`` needs for ``backward``. Each forward/backward computes in the *input's* dtype
(float32 or float64); parameter gradients are accumulated into the float64 buffers, as PyTorch
accumulates into ``.grad`` until ``zero_grad()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from npcbam._checks import (
    require_bool,
    require_finite,
    require_float_array,
    require_ndim,
)

# How many Module.forward / Module.backward calls are running (nested: a container calls its
# children). Only the outermost one snapshots the state it may change (buffers for forward,
# gradients for backward), so that a failure anywhere restores the whole tree.
_forward_depth = 0
_backward_depth = 0


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
    reduction it computes anyway as a free first test) before it changes any state.

    Promises of the protocol:

    * **A rejected call leaves the module exactly as it was.** The outermost ``forward``
      restores every buffer of the tree if anything raises (running statistics do not move);
      the outermost ``backward`` checks the whole ``dy`` before any gradient changes (itself,
      or through a module that does so first: :attr:`checks_dy_first`), and restores every
      gradient of the tree if anything raises later.
    * **The cache never aliases the caller's array.** The outermost ``forward`` works on a
      copy of ``x``: changing ``x`` in place between ``forward`` and ``backward`` does not
      change the gradients (PyTorch instead detects such a change and raises; a copy costs one
      pass over ``x`` and needs no detection).
    """

    #: True in a class whose ``_backward`` refuses a non-finite ``dy`` itself, by that name,
    #: before it changes any gradient: first thing (``require_finite(dout, "dy")``) or in the
    #: first op, from a sum it computes anyway (``gate_backward(..., dout_name="dy")``). The
    #: outermost :meth:`backward` then does not scan ``dy`` a second time: one read of ``dy``
    #: saved (about half a pass of CBAM's 17 at (8, 64, 56, 56), and half of a ReLU's
    #: backward). ``tests/test_dy_checked_first.py`` holds every class that says so to it.
    checks_dy_first = False

    def __init__(self) -> None:
        self._params: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}
        self._buffers: dict[str, np.ndarray] = {}
        # (lower bound, why) of some buffers, checked on loading
        self._buffer_minimums: dict[str, tuple[float, str]] = {}
        self._children: list[tuple[str, Module]] = []  # (state_dict prefix, module)
        self._child_paths: list[str] = []  # each child's name in module paths
        self._cache = None
        self._output_spec: tuple[tuple[int, ...], np.dtype] | None = None
        self._retained: dict[str, np.ndarray] | None = None  # see retain_io()
        self._forward_error: str | None = None  # why the last forward failed, if it did
        self.training = True

    # -- construction -------------------------------------------------------------------------
    def register_parameter(self, name: str, value: np.ndarray) -> None:
        """Store ``value`` as a float64 parameter named ``name`` with a zero gradient buffer."""
        self._params[name] = np.array(value, dtype=np.float64)
        self._grads[name] = np.zeros_like(self._params[name])

    def register_buffer(
        self, name: str, value: np.ndarray, minimum: float | None = None, meaning: str = ""
    ) -> None:
        """Store ``value`` as a buffer: state that is saved and loaded but never trained
        (BatchNorm's running statistics). Buffers get no gradient and no optimizer step.

        With ``minimum``, :meth:`load_state_dict` refuses values below it, saying why with
        ``meaning`` (e.g. ``"a variance is >= 0"``)."""
        self._buffers[name] = np.array(value)
        if minimum is not None:
            self._buffer_minimums[name] = (minimum, meaning)

    def register_child(self, prefix: str, module: Module, path: str | None = None) -> None:
        """Add a submodule; its state names appear as ``prefix.name`` (unchanged if prefix is
        ""), and :meth:`get_submodule` finds it under ``path`` (default: the prefix)."""
        if not (prefix or path):
            raise ValueError("a child registered without a state_dict prefix needs a path name")
        self._children.append((prefix, module))
        self._child_paths.append(path or prefix)

    def _named(self, *tables: str) -> Iterator[tuple[str, np.ndarray]]:
        """Entries of the given tables, this module's first, then each child's (PyTorch's
        state_dict order when called with ``"_params", "_buffers"``)."""
        for table in tables:
            yield from getattr(self, table).items()
        for prefix, child in self._children:
            for name, value in child._named(*tables):
                yield (f"{prefix}.{name}" if prefix else name), value

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Every module of the tree with its dotted path (``""`` for this one), parents first."""
        yield prefix, self
        for name, (_, child) in zip(self._child_paths, self._children):
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def get_submodule(self, path: str) -> Module:
        """The submodule at a dotted path such as ``"blocks.1.cbam"`` (``""`` is ``self``)."""
        modules = dict(self.named_modules())
        if path not in modules:
            named = sorted(name for name in modules if name)
            raise KeyError(f"no submodule {path!r} in {type(self).__name__}; paths: {named}")
        return modules[path]

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

    def buffers(self) -> dict[str, np.ndarray]:
        """The live buffers (running statistics) by PyTorch name; empty for most modules."""
        return dict(self._named("_buffers"))

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers, keyed, shaped and ordered as PyTorch's."""
        return {name: value.copy() for name, value in self._named("_params", "_buffers")}

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray]) -> None:
        """Load parameters and buffers from a mapping of PyTorch names to arrays.

        Parameters and floating buffers accept float32 or float64 (stored as float64); an
        integer buffer (``num_batches_tracked``) accepts integers that fit its dtype (int64).
        Every problem is collected first (missing, unexpected, wrong-shape, wrong-dtype,
        masked, non-finite or out-of-range entries, such as a negative running variance or a
        negative count) and reported in one ``ValueError``; nothing is changed unless the whole
        mapping is valid. Anything but a mapping (a dict, an ``np.load`` archive) is a
        ``TypeError``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a mapping of parameter name -> array (such as the dict "
                f"state_dict() returns), got {type(state_dict).__name__}"
            )
        params = dict(self._named("_params", "_buffers"))
        minimums = dict(self._named("_buffer_minimums"))
        problems = []
        missing = sorted(set(params) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(params), key=repr)
        if missing:
            problems.append(f"missing keys: {missing}")
        if unexpected:
            problems.append(f"unexpected keys: {unexpected} (expected exactly {sorted(params)})")
        arrays = {}
        for name in sorted(set(params) & set(state_dict)):
            if isinstance(state_dict[name], np.ma.MaskedArray):
                problems.append(
                    f"{name}: a masked array (its masked entries have no value to load); pass "
                    "value.filled(...) or np.asarray(value) to choose what they hold"
                )
                continue
            try:
                value = np.asarray(state_dict[name])
            except (TypeError, ValueError) as error:
                problems.append(f"{name}: not convertible to an array ({error})")
                continue
            kind = "integer" if np.issubdtype(params[name].dtype, np.integer) else "floating"
            if value.shape != params[name].shape:
                problems.append(f"{name}: shape {value.shape}, expected {params[name].shape}")
            elif kind == "integer" and not np.issubdtype(value.dtype, np.integer):
                problems.append(f"{name}: dtype {value.dtype}, expected an integer dtype")
            elif kind == "integer" and not _fits(value, params[name].dtype):
                limits = np.iinfo(params[name].dtype)
                problems.append(
                    f"{name}: holds values outside {params[name].dtype}'s range "
                    f"[{limits.min}, {limits.max}]"
                )
            elif kind == "floating" and value.dtype not in (np.float32, np.float64):
                problems.append(f"{name}: dtype {value.dtype}, expected float32 or float64")
            elif kind == "floating" and not np.isfinite(value).all():
                problems.append(f"{name}: holds non-finite values")
            elif name in minimums and (value < minimums[name][0]).any():
                minimum, meaning = minimums[name]
                below = "negative values" if minimum == 0 else f"values below {minimum}"
                problems.append(f"{name}: holds {below}; {meaning}")
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
        """Set training mode on this module and its children; returns ``self``. ``mode`` must
        be True or False (a string such as ``"False"`` is refused, not taken as true)."""
        mode = require_bool(mode, "mode")
        self.training = mode
        for _, child in self._children:
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``); returns ``self``."""
        return self.train(False)

    @contextmanager
    def evaluating(self) -> Iterator[Module]:
        """``with module.evaluating():`` runs the block in evaluation mode, then restores the
        mode the module had (also when the block raises)."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    # -- forward and backward -----------------------------------------------------------------
    def check_input(self, x) -> np.ndarray:
        """Validate ``x`` and return it as an ndarray; raise a clear error otherwise."""
        raise NotImplementedError

    def _forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x) -> np.ndarray:
        """Validate ``x``, compute the output in ``x``'s dtype and cache what backward needs.

        The outermost call works on a copy of ``x``, so later in-place changes to the
        caller's array cannot reach the cache. If anything raises part-way (a layer deep
        inside rejects its input), the buffers of the whole tree are restored, so running
        statistics stay as they were; as some children may already have cached the new
        input, a container then refuses ``backward`` (saying that the last forward failed)
        until the next successful forward.
        """
        global _forward_depth
        if _forward_depth:  # called by a container's forward: the outermost call guards
            out = self._forward(self.check_input(x))
        else:
            try:
                x = self.check_input(x).copy()  # the cache must not alias the caller's array
            except Exception as error:
                self._note_failed_forward(error, [self])
                raise
            saved = {name: value.copy() for name, value in self._named("_buffers")}
            retained = self._retained_snapshot()
            _forward_depth += 1
            try:
                out = self._forward(x)
            except Exception as error:
                for name, value in self._named("_buffers"):
                    np.copyto(value, saved[name])
                self._restore_retained(retained)
                stale = [m for _, m in self.named_modules() if m is not self or self._children]
                for module in stale:
                    module._output_spec = None
                self._note_failed_forward(error, [*stale, self])
                raise
            finally:
                _forward_depth -= 1
        self._output_spec = (out.shape, out.dtype)
        self._forward_error = None
        if self._retained is not None:
            self._retained["output"] = out
        return out

    def __call__(self, x) -> np.ndarray:
        """``m(x)`` is ``m.forward(x)``."""
        return self.forward(x)

    def backward(self, dout) -> np.ndarray:
        """Gradient of the loss with respect to the last forward's input.

        ``dout`` is the gradient with respect to the last output (same shape). Parameter
        gradients are *added* to :attr:`grads` (call :meth:`zero_grad` between steps). A
        rejected call changes no gradient anywhere in the tree: the whole ``dy`` is checked
        before any gradient changes (by the outermost call, or by a module that does so first:
        :attr:`checks_dy_first`), and every gradient is restored if anything raises later.
        """
        if self._output_spec is None:
            if self._forward_error is not None:
                raise RuntimeError(
                    f"{type(self).__name__}.backward(): the last forward() through it failed "
                    f"({self._forward_error}), so there is no forward pass to differentiate; "
                    "run a forward() that succeeds first"
                )
            raise RuntimeError(
                f"{type(self).__name__}.backward() called before any forward(): there is no "
                "cached forward pass to differentiate"
            )
        shape, dtype = self._output_spec
        dout = require_float_array(dout, "dy")
        if dout.shape != shape:
            raise ValueError(f"dy has shape {dout.shape}; expected the last output's shape {shape}")
        dout = dout.astype(dtype, copy=False)
        global _backward_depth
        if _backward_depth:  # called by a container's backward: the outermost call guards
            return self._retain_and_backward(dout)
        # the caller's dy, whole, before anything accumulates (its sum of squares first: one
        # read), unless _backward refuses it itself before that
        if not self.checks_dy_first:
            require_finite(dout, "dy")
        saved = [(grad, grad.copy()) for _, grad in self._named("_grads")]
        retained = self._retained_snapshot()
        _backward_depth += 1
        try:
            return self._retain_and_backward(dout)
        except Exception:
            for grad, value in saved:
                np.copyto(grad, value)
            self._restore_retained(retained)
            raise
        finally:
            _backward_depth -= 1

    def _retain_and_backward(self, dout: np.ndarray) -> np.ndarray:
        if self._retained is not None:
            self._retained["output_grad"] = dout
        return self._backward(dout)

    def _note_failed_forward(self, error: Exception, modules) -> None:
        """Remember, in each of ``modules`` left without a usable forward, why it failed."""
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        for module in modules:
            if module._output_spec is None:
                module._forward_error = reason

    def _retained_snapshot(self) -> list[tuple[Module, dict]]:
        """Shallow copies of every retaining module's :attr:`retained` (restored on failure)."""
        return [(m, dict(m._retained)) for _, m in self.named_modules() if m._retained is not None]

    @staticmethod
    def _restore_retained(snapshot: list[tuple[Module, dict]]) -> None:
        for module, retained in snapshot:
            module._retained.clear()
            module._retained.update(retained)

    def retain_io(self, retain: bool = True) -> None:
        """Keep (or stop keeping) the last output and the gradient with respect to it in
        :attr:`retained` (``"output"``, ``"output_grad"``): what Grad-CAM reads at a layer."""
        self._retained = {} if retain else None

    @property
    def retained(self) -> dict[str, np.ndarray]:
        """The output and output gradient kept since :meth:`retain_io` was switched on."""
        if self._retained is None:
            raise RuntimeError(f"{type(self).__name__} is not retaining: call retain_io() first")
        return self._retained

    def _last_cache(self, what: str):
        """The last forward's cache, or a ``RuntimeError`` naming ``what`` needs it."""
        if self._cache is None:
            raise RuntimeError(f"no {what} yet: call forward() first")
        return self._cache

    def _kink_cache(self):
        """The cache whose ``winners`` describe the last computation (``_cache`` by default)."""
        return self._cache

    def winners(self) -> dict[str, np.ndarray]:
        """The kink state of the last forward: every max's argmax and every ReLU's mask.

        If any of these changes when an input moves by ±h, a finite difference across that
        step is meaningless; :func:`npcbam.check_gradients` uses this to flag such coordinates.
        """
        found = collect_winners(self._kink_cache())
        for prefix, child in self._children:
            for key, value in child.winners().items():
                found[f"{prefix or type(child).__name__}.{key}"] = value
        return found

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.shape}" for k, v in self._named("_params"))
        mode = "" if self.training or not self.buffers() else " in eval mode"
        return f"{type(self).__name__}({shapes}){mode}"


def _fits(value: np.ndarray, dtype: np.dtype) -> bool:
    """Whether every integer of ``value`` is representable in the integer ``dtype``."""
    if value.size == 0 or np.can_cast(value.dtype, dtype):
        return True
    limits = np.iinfo(dtype)
    # compare as Python ints: numpy would wrap a uint64 maximum to -1 in int64
    return limits.min <= int(value.min()) and int(value.max()) <= limits.max


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
