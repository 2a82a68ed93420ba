r"""2-D convolution (cross-correlation, as in PyTorch) through im2col.

Forward: unfold the input into patches, then one matrix product with the flattened kernels.
Backward: the same product read backwards: the weight gradient multiplies the upstream gradient
by the patches, the patch gradient multiplies it by the kernels, and col2im folds the patch
gradient back into the input's shape.

The patches are :mod:`npcbam.ops.im2col`'s *grid* columns (:func:`~npcbam.ops.im2col.unfold`):
one column per position of the padded grid, not only per output pixel, which makes every
copy one long run of memory. The product then also computes the margin columns, which the
forward crops (:func:`~npcbam.ops.im2col.crop_grid`) and the backward gives a zero gradient
(:func:`~npcbam.ops.im2col.embed_grid`), so that they add nothing to the weight or input
gradient. On the demo classifier's 3×3 convolutions this halves the time outside the
products (the copies), for 8.5–17 % more columns in them.

The columns are unfolded and multiplied a block of columns at a time (:func:`column_blocks`),
so that each block is still in the processor's cache when the product reads it: 20–40 %
faster here than one product over all the columns, whose matrix (25 MB for 16 channels of 64 images
of 24×24 under a 3×3 kernel) is read back from main memory. The products are the same sums,
cut into blocks; the weight gradient adds the blocks' contributions in a fixed order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import quiet_floats, require_conv_operands, require_finite_result, require_shape
from npcbam.ops.im2col import (
    Grid,
    as_pair,
    crop_grid,
    embed_grid,
    fold,
    grid_of,
    phases_of,
    tap_columns,
    unfold_rows,
)

#: Bytes of one block of unfolded columns: small enough to stay in the processor's caches
#: between its copy and its product. 2 MiB was the fastest of 0.5, 1, 2 and 4 MiB for the demo
#: classifier's convolutions on the machine this was written on (one block for everything was
#: about 2× slower on its 3×3 layer with 16 channels).
BLOCK_BYTES = 2**21
#: The fewest columns in a block: fewer would cost more in calls than they save in memory.
MIN_BLOCK_COLUMNS = 256


class Conv2dCache(NamedTuple):
    # the input and its padded phases, not its kh*kw times larger unfolding: the backward
    # unfolds the phases again, block by block (keeping every column would cost kh*kw times
    # the input's memory; keeping the phases, about the input's, saves the backward a copy)
    x: np.ndarray  # (N, C, H, W)
    weight: np.ndarray  # (F, C, kh, kw)
    stride: tuple[int, int]
    padding: tuple[int, int]
    has_bias: bool
    dilation: tuple[int, int] = (1, 1)
    phases: dict | None = None  # the forward's phases_of(x); None: the backward makes them


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b``; with an inner dimension of 1 (one output channel, when the input gradient
    is not taken by the flipped kernel) the product is an outer product, which broadcasting
    computes ~10x faster than BLAS."""
    return a * b if a.shape[1] == 1 else a @ b


def times_transposed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` for a long inner dimension; with at most two rows in ``a`` (CBAM's spatial
    convolution: two channels), one matrix-vector product ``b @ a[i]`` per row, which OpenBLAS
    computes 2-4x faster than its matrix product with two rows (measured at 7 to 96 rows in
    ``b``; from four rows on the matrix product is as fast or faster). Half of the spatial
    convolution's backward, about one pass over CBAM's input at (8, 64, 56, 56)."""
    if a.shape[0] <= 2:
        return np.stack([b @ row for row in a])  # (rows of a, rows of b)
    return a @ b.T


def column_blocks(grid: Grid, rows: int, itemsize: int) -> list[tuple[int, int]]:
    """The grid's N·Hq·Wq columns cut into consecutive ``(start, stop)`` blocks of about
    :data:`BLOCK_BYTES` for ``rows`` rows of ``itemsize`` bytes (at least
    :data:`MIN_BLOCK_COLUMNS` columns each); the last block may be shorter."""
    width = max(MIN_BLOCK_COLUMNS, BLOCK_BYTES // (rows * itemsize))
    return [(start, min(start + width, grid.length)) for start in range(0, grid.length, width)]


def blocks_of_rows(phases: dict, grid: Grid, dtype):
    """Yield ``(start, stop, rows)`` for every block of grid columns, ``rows`` the block's
    :func:`~npcbam.ops.im2col.unfold_rows` (C, kh, B, width), written into one reused buffer:
    each block is multiplied while it is still in the cache."""
    c, kh = grid.x_shape[1], grid.kernel[0]
    n_column_phases = len(grid.column_phases)
    blocks = column_blocks(grid, c * kh * n_column_phases, np.dtype(dtype).itemsize)
    buffer = np.empty((c, kh, n_column_phases, blocks[0][1] + grid.reach), dtype=dtype)
    for start, stop in blocks:
        rows = unfold_rows(phases, grid, start, stop, buffer[..., : stop - start + grid.reach])
        yield start, stop, rows


def kernel_columns(weight: np.ndarray) -> list[np.ndarray]:
    """The kernel's columns as matrices: (F, C, kh, kw) -> kw arrays (F, C*kh), row (c, u)."""
    f, c, kh, kw = weight.shape
    return [np.ascontiguousarray(weight[..., v]).reshape(f, c * kh) for v in range(kw)]


def multiply_by_columns(columns: list, rows, grid: Grid, out: np.ndarray) -> None:
    r"""``out = W_mat @ cols`` for one block, kernel column by kernel column:
    :math:`\sum_v W_{:,:,:,v}\,\mathrm{cols}_v` with ``columns[v]`` the (F, C·kh) matrix
    :math:`W_{:,:,:,v}` (:func:`kernel_columns`) and :math:`\mathrm{cols}_v` the block's rows
    shifted by column v (:func:`~npcbam.ops.im2col.tap_columns`); ``out``: (F, width)."""
    width = out.shape[1]
    for v, weight_column in enumerate(columns):
        taps = tap_columns(rows, grid, v, width)  # (C*kh, width)
        if v == 0:
            np.matmul(weight_column, taps, out=out)
        else:  # the other kernel columns' products, added
            out += weight_column @ taps


def add_weight_gradient(dweight: np.ndarray, left: np.ndarray, rows, grid: Grid) -> None:
    r"""``dweight[..., v] += left @ cols_v.T`` for every kernel column v of one block: the
    block's share of :math:`\bar W_{\text{mat}} = G\,\mathrm{cols}^\top`, column by column.
    ``dweight``: (F, C, kh, kw); ``left``: (F, width)."""
    f, c, kh, kw = dweight.shape
    for v in range(kw):
        taps = tap_columns(rows, grid, v, left.shape[1])  # (C*kh, width)
        # (F, width) @ (width, C*kh) -> (F, C*kh) -> (F, C, kh)
        dweight[..., v] += times_transposed(left, taps).reshape(f, c, kh)


def convolve(x: np.ndarray, weight: np.ndarray, stride, padding, dilation):
    """The product of :func:`conv2d_forward` without its checks or bias: (N, C, H, W) and
    (F, C, kh, kw) -> (N, F, Ho, Wo), C-contiguous; and the padded input's phases."""
    f, _, kh, kw = weight.shape
    grid = grid_of(x.shape, (kh, kw), stride, padding, dilation)
    phases = phases_of(x, grid)  # the padded input's phases, each (C, N*Hq*Wq)
    out_grid = np.empty((f, grid.length), dtype=x.dtype)  # (F, N*Hq*Wq)
    columns = kernel_columns(weight)  # kw matrices (F, C*kh)
    for start, stop, rows in blocks_of_rows(phases, grid, x.dtype):
        # the block's product, (F, stop - start), read from the cache
        multiply_by_columns(columns, rows, grid, out_grid[:, start:stop])
    # the output pixels: (F, N*Hq*Wq) -> (F, N, Ho, Wo) -> (N, F, Ho, Wo)
    return np.ascontiguousarray(crop_grid(out_grid, grid).transpose(1, 0, 2, 3)), phases


def flipped_padding(cache: Conv2dCache) -> tuple[int, int] | None:
    r"""The padding :math:`d(k - 1) - p` per axis under which a stride-1 convolution's input
    gradient is a convolution of :math:`\bar y` with the flipped kernel, when that is the
    cheaper way; else None.

    None when the stride is not 1 or the forward padding exceeds :math:`d(k - 1)` (the
    padding would be negative), and when the layer has more output than input channels
    (F > C): then unfolding :math:`\bar y` (F·kh·kw rows) writes more than the product
    :math:`W_{\text{mat}}^\top \bar Y` (C·kh·kw rows) it replaces, as for the 3 → 16 stem of
    the demo classifier (3× slower that way)."""
    f, c = cache.weight.shape[:2]
    if cache.stride != (1, 1) or f > c:
        return None
    kernel = cache.weight.shape[2:]
    back = tuple(d * (k - 1) - p for k, p, d in zip(kernel, cache.padding, cache.dilation))
    return back if min(back) >= 0 else None


@quiet_floats
def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride=1,
    padding=0,
    dilation=1,
) -> tuple[np.ndarray, Conv2dCache]:
    r"""Convolve (cross-correlate) a batch of images with F kernels.

    .. math:: y_{n f i j} = b_f + \sum_{c, u, v} W_{f c u v}\,
              x^{\text{pad}}_{n,\,c,\,s_h i + d_h u,\,s_w j + d_w v}
              \qquad\Longleftrightarrow\qquad
              Y = W_{\text{mat}}\, \mathrm{cols}(x) + b

    with :math:`W_{\text{mat}}` the (F, C·kh·kw) kernels and :math:`Y` the (F, N·Ho·Wo) output.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    weight : ndarray, shape (F, C, kh, kw)
    bias : ndarray, shape (F,), optional
    stride : int or (sh, sw), >= 1
    padding : int or (ph, pw), >= 0, zeros on each side
    dilation : int or (dh, dw), >= 1
        Spacing of the kernel's taps: a dilated k×k kernel covers :math:`d(k-1)+1` pixels
        per axis with k² weights (1: the ordinary convolution).

    Returns
    -------
    out : ndarray, shape (N, F, Ho, Wo)
        with :math:`H_o = \lfloor (H + 2p_h - d_h(k_h - 1) - 1)/s_h \rfloor + 1` (likewise
        :math:`W_o`), :math:`\lfloor (H + 2p_h - k_h)/s_h \rfloor + 1` when not dilated
    cache : Conv2dCache

    Checks: ``x``, ``weight`` (and ``bias``) float32 or float64 with the shapes above (no empty
    axis, the same C, one bias per filter), else ``TypeError`` / ``ValueError`` naming the
    argument; a NaN or inf that reaches the output, or an output that overflows, raises
    ``ValueError`` (one pass over the output, small beside the product's C·kh·kw per entry).
    """
    x, weight, bias = require_conv_operands(x, weight, bias, 1, "conv2d", "(F, C, kh, kw)")
    stride, padding = as_pair(stride, "stride", 1), as_pair(padding, "padding", 0)
    dilation = as_pair(dilation, "dilation", 1)
    out, phases = convolve(x, weight, stride, padding, dilation)  # (N, F, Ho, Wo)
    if bias is not None:
        out += bias[:, None, None]
    require_finite_result("conv2d_forward", out, {"x": x, "weight": weight, "bias": bias})
    return out, Conv2dCache(x, weight, stride, padding, bias is not None, dilation, phases)


def backward_by_fold(dout: np.ndarray, cache: Conv2dCache, grid: Grid):
    """x̄ and W̄ of :func:`conv2d_forward` at any stride: W̄_mat = Ḡ·colsᵀ, then the columns'
    gradient Wᵀ·Ḡ folded back onto the input (col2im on the grid). Returns (dx, dweight)."""
    f, c, kh, kw = cache.weight.shape
    # (N, F, Ho, Wo) -> (F, N, Ho, Wo) -> (F, N*Hq*Wq), 0 in the margin columns
    dout_grid = embed_grid(dout.transpose(1, 0, 2, 3), grid)
    weight_mat = cache.weight.reshape(f, c * kh * kw)  # (F, C, kh, kw) -> (F, C*kh*kw)
    # W̄_mat = Ḡ·colsᵀ, summed block by block over the columns as unfolded in the forward
    phases = cache.phases or phases_of(cache.x, grid)  # the forward's, each (C, N*Hq*Wq)
    dweight = np.zeros(cache.weight.shape, dtype=dout_grid.dtype)  # (F, C, kh, kw)
    for start, stop, rows in blocks_of_rows(phases, grid, cache.x.dtype):
        add_weight_gradient(dweight, dout_grid[:, start:stop], rows, grid)
    del phases  # free it before the columns' gradient is made: a lower peak of memory
    dcols = matmul(weight_mat.T, dout_grid)  # (C*kh*kw, F) @ (F, N*Hq*Wq)
    dx = fold(dcols, grid)  # (N, C, H, W)
    return dx, dweight


def backward_by_flipped_kernel(dout: np.ndarray, cache: Conv2dCache, back_padding):
    r"""x̄ and W̄ of a stride-1 :func:`conv2d_forward`, both from one unfolding of ȳ.

    x̄ is ȳ convolved with the kernel rotated by 180° and its two channel axes swapped,
    :math:`\widetilde W_{cfuv} = W_{f,c,k_h-1-u,k_w-1-v}`, padded by :math:`d(k - 1) - p`
    (notebook 04, §5): :math:`\bar X = \widetilde W_{\text{mat}}\, \mathrm{cols}(\bar y)`.
    The same columns give the weight gradient,
    :math:`\bar{\widetilde W}_{\text{mat}} = X\, \mathrm{cols}(\bar y)^\top` with X the
    input as a (C, N·H·W) matrix, since
    :math:`\bar W_{fcuv} = \sum x_{n,c,y,z}\, \bar y^{\text{pad}}_{n,f,y + d(k_h-1-u),
    z + d(k_w-1-v)}`: the input's columns are not unfolded again. Unfolding ȳ (F·kh·kw rows)
    and products with F·kh·kw terms per entry cost less than the fold route's Wᵀ·Ḡ, which
    has F terms per entry, and its fold, when F <= C; with the shared unfolding, 10-25 % less
    time than unfolding the input again for W̄ on the demo classifier's 3×3 layers (and than
    the fold route on CBAM's 2 -> 1 spatial convolution). Returns (dx, dweight).
    """
    f, c, kh, kw = cache.weight.shape
    # W̃: (F, C, kh, kw) -> rotated by 180°, channel axes swapped: (C, F, kh, kw)
    flipped = cache.weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    # the flipped convolution's grid: input ȳ (N, F, Ho, Wo), output x̄ (N, C, H, W)
    grid = grid_of(dout.shape, (kh, kw), (1, 1), back_padding, cache.dilation)
    phases = phases_of(dout, grid)  # ȳ padded into the grid's cells, (F, N*Hg*Wg)
    # x on this grid, (C, N*Hg*Wg), x at the output positions, 0 in the margin. The cells of
    # the forward's phases have this grid's size (H + ph by W + pw at stride 1 with a padding
    # of at most d(k - 1)), with x at (ph, pw): shifted by ph*Wg + pw they are x on this grid,
    # a view, whose missing tail is zeros (the weight gradient's products just stop earlier)
    if cache.phases is not None:
        (ph, pw), wg = cache.padding, grid.grid_hw[1]
        x_grid = cache.phases[0, 0][:, ph * wg + pw :]
    else:  # a cache made by hand: (N, C, H, W) -> (C, N, H, W) -> (C, N*Hg*Wg)
        x_grid = embed_grid(cache.x.transpose(1, 0, 2, 3), grid)
    dx_grid = np.empty((c, grid.length), dtype=dout.dtype)  # (C, N*Hg*Wg)
    dflipped = np.zeros((c, f, kh, kw), dtype=dout.dtype)  # the gradient of W̃
    columns = kernel_columns(flipped)  # kw matrices (C, F*kh)
    for start, stop, rows in blocks_of_rows(phases, grid, dout.dtype):
        multiply_by_columns(columns, rows, grid, dx_grid[:, start:stop])  # (C, stop - start)
        add_weight_gradient(dflipped, x_grid[:, start:stop], rows, grid)
    # the input pixels: (C, N*Hg*Wg) -> (C, N, H, W) -> (N, C, H, W)
    dx = np.ascontiguousarray(crop_grid(dx_grid, grid).transpose(1, 0, 2, 3))
    # (C, F, kh, kw) -> (F, C, kh, kw), rotated back by 180°
    dflipped = dflipped.transpose(1, 0, 2, 3)
    return dx, np.ascontiguousarray(dflipped[:, :, ::-1, ::-1])


@quiet_floats
def conv2d_backward(
    dout: np.ndarray, cache: Conv2dCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    r"""Gradients of :func:`conv2d_forward`.

    .. math::

        \frac{\partial L}{\partial W_{\text{mat}}} = G\, \mathrm{cols}(x)^\top, \qquad
        \frac{\partial L}{\partial \mathrm{cols}} = W_{\text{mat}}^\top G, \qquad
        \frac{\partial L}{\partial x} = \mathrm{col2im}\Big(\frac{\partial L}
            {\partial \mathrm{cols}}\Big), \qquad
        \frac{\partial L}{\partial b_f} = \sum_{n,i,j} G_{f, (n i j)}

    where :math:`G` is the upstream gradient as an (F, N·Ho·Wo) matrix. A dilation changes
    only which pixels the columns hold: col2im adds each back where im2col read it.

    Two routes compute these same sums (both on grid columns, see the module docstring):
    :func:`backward_by_fold`, the formulas above, at any stride; and, at stride 1 when
    F <= C (:func:`flipped_padding`), :func:`backward_by_flipped_kernel`, which takes
    :math:`\bar x` as the convolution of :math:`\bar y` with the flipped kernel and
    :math:`\bar W` from the same unfolded :math:`\bar y`.

    Parameters
    ----------
    dout : ndarray, shape (N, F, Ho, Wo)
    cache : Conv2dCache

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dweight : ndarray, shape (F, C, kh, kw)
    dbias : ndarray, shape (F,), or None when the forward had no bias

    Checks: ``dout`` has the output's shape; the gradients are checked finite (a NaN or inf in
    ``dout``, found in the small ``dweight``, or an overflow raises ``ValueError``).
    """
    f, _, kh, kw = cache.weight.shape
    grid = grid_of(cache.x.shape, (kh, kw), cache.stride, cache.padding, cache.dilation)
    require_shape(dout, (len(cache.x), f, *grid.out_hw), "dout", "the output's shape")
    back_padding = flipped_padding(cache)
    if back_padding is not None:
        dx, dweight = backward_by_flipped_kernel(dout, cache, back_padding)
    else:
        dx, dweight = backward_by_fold(dout, cache, grid)
    dbias = dout.sum(axis=(0, 2, 3)) if cache.has_bias else None
    inputs = {"dout": dout, "x": cache.x, "weight": cache.weight}
    require_finite_result("conv2d_backward", dweight, inputs)  # dout's NaN or inf show here
    require_finite_result("conv2d_backward", dx, inputs)
    return dx, dweight, dbias
