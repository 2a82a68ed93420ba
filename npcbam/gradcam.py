r"""Grad-CAM through npcbam's manual backward pass, and figure-ready attention arrays.

Grad-CAM (Selvaraju et al., ICCV 2017; used in the CBAM paper's Figure 4) explains a class
score :math:`z_t` with a layer's activations :math:`A \in \mathbb{R}^{K \times h \times w}`:

.. math:: \alpha_k = \frac{1}{hw} \sum_{i,j} \frac{\partial z_t}{\partial A_{kij}}, \qquad
          \mathrm{CAM}_{ij} = \mathrm{relu}\Big(\sum_k \alpha_k A_{kij}\Big)

then upsampled to the image and scaled to a maximum of 1. Nothing here plots: the functions
return arrays, and notebooks or docs draw them (matplotlib is not a dependency).
"""

from __future__ import annotations

import numpy as np

from npcbam._checks import require_float_array, require_ndim
from npcbam.nn.classifier import AttentionClassifier
from npcbam.nn.module import Module
from npcbam.ops.pooling import AvgPoolCache, global_avg_pool_backward


def upsample_nearest(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    r"""Nearest-neighbour resize of (N, h, w) maps to (N, H, W).

    Output pixel :math:`(i, j)` takes input pixel :math:`(\lfloor (i + \frac12) h / H \rfloor,
    \lfloor (j + \frac12) w / W \rfloor)`: each input pixel covers an equal block when
    :math:`H/h` is an integer, so no attention mass moves between regions.
    """
    _, h, w = maps.shape
    rows = ((np.arange(size[0]) + 0.5) * h / size[0]).astype(int)  # (H,)
    cols = ((np.arange(size[1]) + 0.5) * w / size[1]).astype(int)  # (W,)
    return maps[:, rows[:, None], cols[None, :]]  # (N, H, W)


def _targets(target_class, n: int, num_classes: int) -> np.ndarray:
    """``target_class`` as (N,) class indices: one int for every image, or one per image."""
    targets = np.asarray(target_class)
    if targets.ndim == 0:
        targets = np.full(n, targets)
    if targets.shape != (n,):
        raise ValueError(
            f"target_class has shape {targets.shape}; expected one int or one per image, ({n},)"
        )
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"target_class must be an int or (N,) ints, got {target_class!r}")
    if targets.min() < 0 or targets.max() >= num_classes:
        raise ValueError(f"target_class {target_class!r} is outside [0, {num_classes})")
    return targets


def grad_cam(model: Module, x, target_class, layer: str) -> np.ndarray:
    r"""Grad-CAM maps of a classifier for ``target_class`` at the output of ``layer``.

    Runs one forward and one manual backward of the class score in evaluation mode; the
    model's mode, parameters, gradient buffers and running statistics are left as they were.

    Parameters
    ----------
    model : Module
        A classifier mapping (N, C, H, W) images to (N, K) logits.
    x : ndarray, shape (N, C, H, W)
    target_class : int or ndarray of int, shape (N,)
        The class t whose score :math:`z_t` is explained (one per image, or one for all).
    layer : str
        Module path of a layer with (N, K, h, w) output, e.g. ``"blocks.1"``
        (see ``model.named_modules()``).

    Returns
    -------
    cam : ndarray, shape (N, H, W), float64 in [0, 1]
        Each map divided by its maximum (an all-zero map stays zero).
    """
    if target_class is None:  # here the class is required; grad_cams takes None as "predicted"
        raise TypeError("target_class must be an int or (N,) ints, got None")
    _, cams = grad_cams(model, x, target_class, [layer])
    return cams[layer]


def grad_cams(model: Module, x, target_class, layers) -> tuple[np.ndarray, dict]:
    """Grad-CAM at several layers from one forward and one backward pass.

    As :func:`grad_cam`, with ``layers`` a sequence of module paths and ``target_class=None``
    meaning each image's predicted class. The model's other caches (its spatial attention
    maps, for instance) hold this forward afterwards. For an :class:`AttentionClassifier`
    asked only about its blocks, the backward stops at the first of them
    (``_block_output_grads``); any other model runs its whole backward.

    Returns
    -------
    logits : ndarray, shape (N, num_classes)
    cams : dict of str to ndarray, shape (N, H, W) each, keyed by layer
    """
    x = require_float_array(x, "x")
    require_ndim(x, 4, "x", "(N, C, H, W)")
    targets = {layer: model.get_submodule(layer) for layer in layers}
    first_block = _first_block(model, layers)
    retaining = list(targets.values())
    if first_block is not None:  # the shortened backward reads every block's output
        retaining += model.blocks.layers
    saved_grads = {name: grad.copy() for name, grad in model.grads.items()}
    for module in retaining:
        module.retain_io(True)
    try:
        with model.evaluating():
            logits = model.forward(x)  # (N, K)
            if target_class is None:
                target_class = logits.argmax(axis=1)
            classes = _targets(target_class, len(x), logits.shape[1])
            dlogits = np.zeros_like(logits)
            dlogits[np.arange(len(x)), classes] = 1.0  # d z_t / d logits
            if first_block is None:
                model.backward(dlogits)
                output_grads = {layer: t.retained["output_grad"] for layer, t in targets.items()}
            else:
                output_grads = _block_output_grads(model, dlogits, first_block)
        outputs = {layer: target.retained["output"] for layer, target in targets.items()}
    finally:
        for module in retaining:
            module.retain_io(False)
        for name, grad in model.grads.items():
            np.copyto(grad, saved_grads[name])
    cams = {}
    for layer in targets:
        activations = outputs[layer]  # A, (N, K, h, w)
        dactivations = output_grads[layer]  # dz_t/dA, (N, K, h, w)
        if activations.ndim != 4:
            raise ValueError(
                f"layer {layer!r} outputs shape {activations.shape}; Grad-CAM needs a "
                "(N, K, h, w) feature map"
            )
        alpha = dactivations.mean(axis=(2, 3))  # (N, K), the channel weights
        cam = np.maximum(np.einsum("nk,nkij->nij", alpha, activations), 0.0)  # (N, h, w)
        cam = upsample_nearest(cam.astype(np.float64), x.shape[2:])  # (N, H, W)
        peak = cam.max(axis=(1, 2), keepdims=True)
        cams[layer] = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
    return logits, cams


def _first_block(model: Module, layers) -> int | None:
    """The index k of the first block among ``layers`` when ``model`` is an
    :class:`AttentionClassifier` and every layer is one of its blocks (``"blocks.<k>"``);
    None otherwise."""
    if not isinstance(model, AttentionClassifier) or not layers:
        return None
    blocks = [f"blocks.{k}" for k in range(len(model.blocks))]
    if not all(layer in blocks for layer in layers):
        return None
    return min(blocks.index(layer) for layer in layers)


def _block_output_grads(
    model: AttentionClassifier, dlogits: np.ndarray, first: int
) -> dict[str, np.ndarray]:
    r"""The gradients :math:`\bar{A}` of the outputs of blocks ``first`` .. K-1, from the part
    of the classifier's backward above block ``first``'s output.

    The classifier's own backward, ``AttentionClassifier._backward``, runs head, global average
    pool, every block in reverse, then the stem; Grad-CAM reads nothing below block ``first``,
    so this runs the same steps, each a module's or op's own backward, and stops there. The
    output gradient of block k is what block k + 1's backward returns, the same array the
    full backward would pass on. Skipping block 0 and the stem (the backward of the
    full-resolution convolutions, about 40 % of the work) made ``npcbam.train.attention_in_box``
    1.7x faster (float64, 1000 test images of the "where" task in batches of 250, one BLAS
    thread).

    Every block must retain its output (:meth:`~npcbam.nn.module.Module.retain_io`): the last
    block's gives the shape of the pooled features. Parameter gradients of the head and the
    blocks after ``first`` accumulate as in a full backward (:func:`grad_cams` restores them).

    Returns
    -------
    dict of str to ndarray, shape (N, C_k, H_k, W_k) each, keyed ``"blocks.<k>"``
    """
    blocks = model.blocks.layers
    features = blocks[-1].retained["output"]  # (N, C_K, H_K, W_K)
    dpooled = model.head.backward(dlogits)  # (N, C_K)
    dout = global_avg_pool_backward(dpooled, AvgPoolCache(features.shape))  # (N, C_K, H_K, W_K)
    output_grads = {}
    for k in range(len(blocks) - 1, first - 1, -1):
        output_grads[f"blocks.{k}"] = dout
        if k > first:
            dout = blocks[k].backward(dout)  # block k - 1's output gradient
    return output_grads


def spatial_maps_upsampled(model: Module, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The last forward's spatial attention maps, keyed ``"spatial/<block path>"``, each
    resized to ``size``: (N, H, W) float64 in (0, 1)."""
    return {
        f"spatial/{path}": upsample_nearest(m[:, 0].astype(np.float64), size)
        for path, m in model.spatial_maps().items()
    }


def _box_masks(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) booleans, True inside each (top, left, bottom, right) box."""
    rows, cols = np.arange(size[0]), np.arange(size[1])
    top, left, bottom, right = (boxes[:, k, None] for k in range(4))  # (N, 1) each
    in_rows = (rows >= top) & (rows < bottom)  # (N, H)
    in_cols = (cols >= left) & (cols < right)  # (N, W)
    return in_rows[:, :, None] & in_cols[:, None, :]  # (N, H, W)


def peak_in_box(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether each map's maximum lies inside its box: the "pointing game" of Zhang et al.
    (ECCV 2016). A map that ignores position hits with probability about the box's area share.

    Parameters
    ----------
    maps : ndarray, shape (N, H, W)
    boxes : ndarray, shape (N, 4), (top, left, bottom, right), bottom/right exclusive

    Returns
    -------
    hits : ndarray of bool, shape (N,)
    """
    n, h, w = maps.shape
    peak = maps.reshape(n, h * w).argmax(axis=1)  # first maximum, row-major
    return _box_masks(boxes, (h, w)).reshape(n, h * w)[np.arange(n), peak]


def box_mass_share(maps: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Share of each map's mass inside its box, and the box's share of the image.

    .. math:: s_n = \frac{\sum_{(i,j) \in \text{box}_n} M_{nij}}{\sum_{i,j} M_{nij}}, \qquad
              a_n = \frac{|\text{box}_n|}{HW}

    :math:`s_n > a_n` means the map concentrates on the box more than a uniform map would.

    Parameters
    ----------
    maps : ndarray, shape (N, H, W), non-negative
    boxes : ndarray, shape (N, 4), (top, left, bottom, right), bottom/right exclusive

    Returns
    -------
    share, area_share : ndarray, shape (N,) each
    """
    n, h, w = maps.shape
    inside = _box_masks(boxes, (h, w))  # (N, H, W)
    total = maps.sum(axis=(1, 2))
    share = np.divide((maps * inside).sum(axis=(1, 2)), total, out=np.zeros(n), where=total > 0)
    return share, inside.sum(axis=(1, 2)) / (h * w)


def attention_figure(model: Module, images, target_class=None, layer: str | None = None):
    """Everything a figure of a classifier's attention needs, as arrays.

    Parameters
    ----------
    model : AttentionClassifier (or a classifier with ``spatial_maps()`` and ``blocks``)
    images : ndarray, shape (N, C, H, W)
    target_class : int or (N,) ints, optional
        Class explained by Grad-CAM; default: the predicted class.
    layer : str, optional
        Grad-CAM layer; default: the last block (``"blocks.<K-1>"``).

    Returns
    -------
    dict of str to ndarray
        ``"images"`` (N, C, H, W), ``"predicted"`` (N,), ``"grad_cam"`` (N, H, W), and for every
        block with spatial attention ``"spatial/blocks.<k>"`` (N, H, W): its spatial map
        upsampled to the image (values in (0, 1)).
    """
    images = require_float_array(images, "images")
    layer = layer or f"blocks.{len(model.blocks) - 1}"
    logits, cams = grad_cams(model, images, target_class, [layer])
    spatial = spatial_maps_upsampled(model, images.shape[2:])  # from the same forward
    predicted = logits.argmax(axis=1)
    return {"images": images, "predicted": predicted, "grad_cam": cams[layer], **spatial}
