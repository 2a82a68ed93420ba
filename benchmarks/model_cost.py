"""Multiply-adds of one forward pass of an npcbam model, counted from its layers' shapes.

The convention of the CBAM, SE and ECA papers' "FLOPs" columns (ResNet-50: 3.86 G): one
multiply-add per weight use in the convolutions, dense layers and the attention modules'
own weights (MLPs, ECA's 1-D convolution, the spatial convolutions); BatchNorm, activations,
pooling, gating and additions are not counted (BatchNorm folds into the preceding layer at
inference, the rest are a few operations per element).
"""

from __future__ import annotations

import numpy as np

from npcbam.nn import ECA, SE, ChannelAttention, Conv2d, Linear, SpatialAttention


def _own_weights(layer) -> int:
    """Entries of the layer's own weight tensors (two or more axes: no biases, no BatchNorm)."""
    return sum(w.size for w in layer._params.values() if w.ndim >= 2)


def multiply_adds(model, image_shape: tuple[int, int, int]) -> int:
    """Multiply-adds of ``model`` on one image of shape (C, H, W).

    Runs one forward pass (evaluation mode, mode restored) recording every layer's output
    shape, then adds per layer: a convolution's or a spatial attention's weights once per
    output pixel, a dense layer's once per input row, SE's MLP once, channel attention's MLP
    once per pooling, ECA's k weights once per channel. A layer with weights of its own and no
    rule here raises ``TypeError`` rather than being left out.
    """
    outputs: dict[str, tuple[int, ...]] = {}
    layers = dict(model.named_modules())

    def recording(name, forward):
        def wrapped(x):
            out = forward(x)
            outputs[name] = out.shape
            return out

        return wrapped

    for name, layer in layers.items():
        layer.forward = recording(name, layer.forward)  # an instance attribute, removed below
    try:
        x = np.random.default_rng(0).standard_normal((1, *image_shape))  # (1, C, H, W)
        with model.evaluating():
            model.forward(x)
    finally:
        for layer in layers.values():
            del layer.forward
    total = 0
    for name, layer in layers.items():
        weights = _own_weights(layer)
        if not weights:
            continue
        # a module its parent runs without its public forward (CBAM's parallel arrangement
        # calls map_forward) has its parent's H x W: the nearest recorded ancestor's output
        owner = name
        while owner not in outputs:
            owner = owner.rpartition(".")[0]
        out = outputs[owner]
        if isinstance(layer, (Conv2d, SpatialAttention)):
            total += weights * out[-2] * out[-1]  # every output pixel: (N=1, C, Ho, Wo)
        elif isinstance(layer, Linear):
            total += weights * int(np.prod(out[:-1]))  # every row of (..., out_features)
        elif isinstance(layer, SE):
            total += weights  # fc1 and fc2 on the one pooled vector
        elif isinstance(layer, ChannelAttention):
            total += weights * len(layer.pool_types)  # the shared MLP, once per pooling
        elif isinstance(layer, ECA):
            total += weights * layer.channels  # k weights at each of the C channels
        else:
            raise TypeError(f"no multiply-add rule for {type(layer).__name__} at {name!r}")
    return int(total)
