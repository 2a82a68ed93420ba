r"""im2col and col2im: a convolution becomes one matrix product.

``im2col`` copies every receptive field (a C×kh×kw patch of the zero-padded input) into a
column of a matrix; ``col2im`` is its adjoint: it adds each column back onto the patch it came
from. Where windows overlap (stride < kernel) a pixel receives the sum of several columns, hence
``+=``.

A *dilated* kernel (dilation d > 1, as in BAM's spatial branch) reads every d-th pixel of a
window spanning :math:`d(k - 1) + 1` pixels: tap u of the kernel sits at offset :math:`d u`.
Both functions take the dilation; with the default d = 1 they are the plain convolution's.

How the columns are copied: one shifted slice per tap
-----------------------------------------------------
Copying the patches one output pixel at a time moves kh·kw runs of a few pixels each. The
copy is organised the other way round here. Fix one kernel tap (u, v): the values it reads,
over all output pixels, are the padded input shifted by (u, v). Lay the input out
channel-major, each image in a *cell* of :math:`H_g \times W_g` pixels with :math:`p_h` zero
rows above it and :math:`p_w` zero columns before each of its rows, and flatten each channel,
(C, N·Hg·Wg); a shift by (u, v) is then a shift of the flat index by :math:`u W_g + v`, and the
tap's whole row block of the matrix is *one* contiguous slice of it. :func:`unfold` makes
kh·kw such copies, each a long run of memory (about 3× faster than a copy by patches for a
3×3 kernel on 16 channels of 24×24 images). A window that runs past the right edge of a row
continues, in the flat index, into the zero columns before the next row, and one past the
bottom of an image into the zero rows above the next: the left and top padding double as the
right and bottom padding, so a cell needs :math:`H_g = \max(H + p_h, H_o)` rows (likewise
columns), not :math:`H + 2p_h`.

The price: the columns are those of every position (n, i, j) of the grid of cells,
:math:`i < H_g,\ j < W_g`, not only of the :math:`H_o \times W_o` output pixels. The extra
*margin* columns (:math:`i \ge H_o` or :math:`j \ge W_o`) hold windows that straddle two
rows or two images: computed and then cropped, about 8.5 % more columns for a 3×3 "same"
convolution on 24×24 maps, 17 % on 12×12 (with a full padding on each side, 17 % and 36 %).
With a stride s the padded input is first split into its :math:`s_h s_w` *phases* (the pixels
whose row is a mod :math:`s_h` and column b mod :math:`s_w`), each an image of
:math:`H_q \times W_q` pixels, :math:`H_q = \lceil \max(H + p_h, s_h H_o) / s_h \rceil`: a tap
at offset :math:`(d_h u, d_w v)` reads phase :math:`(d_h u \bmod s_h,\ d_w v \bmod s_w)`
shifted by :math:`(\lfloor d_h u / s_h \rfloor, \lfloor d_w v / s_w \rfloor)`, so every stride
is a stride-1 copy from one phase. With s = 1 there is one phase, the cells themselves.

:func:`unfold` / :func:`fold` work on these grid columns (the convolution uses them and crops
its output); :func:`im2col` / :func:`col2im` are the textbook matrices, the grid's columns at
the output pixels: ``im2col = crop ∘ unfold`` and ``col2im = fold ∘ embed``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from npcbam._checks import require_int


def as_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """Return ``(value, value)`` for an int, or the checked pair for a 2-sequence."""
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return tuple(require_int(v, name, minimum) for v in pair)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    r"""Output length of a convolution along one axis:
    :math:`\lfloor (L + 2p - d(k - 1) - 1) / s \rfloor + 1`, or a ``ValueError`` if the
    (dilated) kernel does not fit. With d = 1 this is :math:`\lfloor (L + 2p - k)/s \rfloor + 1`.
    """
    padded = size + 2 * padding
    span = dilation * (kernel - 1) + 1  # the pixels a dilated kernel reaches across
    if padded < span:
        dilated = f" dilated by {dilation} to a span of {span}" if dilation > 1 else ""
        raise ValueError(
            f"kernel of size {kernel}{dilated} does not fit an input of size {size} padded by "
            f"{padding} on each side (padded size {padded})"
        )
    return (padded - span) // stride + 1


class Grid(NamedTuple):
    """Geometry of the grid columns of one convolution (see the module's docstring)."""

    x_shape: tuple[int, int, int, int]  # (N, C, H, W) of the input
    kernel: tuple[int, int]  # (kh, kw)
    stride: tuple[int, int]  # (sh, sw): the number of phases along each axis
    padding: tuple[int, int]  # (ph, pw)
    out_hw: tuple[int, int]  # (Ho, Wo): the output pixels, the grid's top-left corner
    grid_hw: tuple[int, int]  # (Hq, Wq): one phase of a cell (module docstring)
    rows: tuple[tuple[int, int], ...]  # per kernel row u: phase row a, offset floor(dh u/sh) Wq
    cols: tuple[tuple[int, int], ...]  # per kernel column v: phase column b, shift floor(dw v/sw)

    @property
    def taps(self) -> list[tuple[int, int, int]]:
        """Per tap (u, v), row-major: its phase (a, b) and its offset in the flattened phase,
        the row's offset plus the column's shift."""
        return [(a, b, offset + shift) for a, offset in self.rows for b, shift in self.cols]

    @property
    def column_phases(self) -> list[int]:
        """The phase columns b some kernel column reads, in increasing order."""
        return sorted({b for b, _ in self.cols})

    @property
    def phases_read(self) -> set[tuple[int, int]]:
        """The phases (a, b) some tap reads: all s_h·s_w of them for a 3×3 kernel with stride
        2, only (0, 0) for a 1×1 kernel."""
        return {(a, b) for a, b, _ in self.taps}

    @property
    def reach(self) -> int:
        """The largest column shift of a kernel column: how much longer than its block of
        columns each run of :func:`unfold_rows` is."""
        return max(shift for _, shift in self.cols)

    @property
    def length(self) -> int:
        """Columns of the grid: N·Hq·Wq."""
        return self.x_shape[0] * self.grid_hw[0] * self.grid_hw[1]


def grid_of(x_shape, kernel, stride, padding, dilation=(1, 1)) -> Grid:
    r"""The :class:`Grid` of a convolution of an (N, C, H, W) input: output size, phase size and,
    for each tap (u, v), its phase :math:`(d_h u \bmod s_h, d_w v \bmod s_w)` and its offset
    :math:`\lfloor d_h u / s_h \rfloor W_q + \lfloor d_w v / s_w \rfloor` in a flattened phase.
    Raises ``ValueError`` (from :func:`conv_output_size`) if the kernel does not fit."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    n, c, h, w = x_shape
    ho = conv_output_size(h, kh, sh, ph, dh)
    wo = conv_output_size(w, kw, sw, pw, dw)
    # each image's cell of the grid: its rows with the padding above (ph) but not below, the
    # next image's top padding doubling as this one's bottom padding (and, in the flat index,
    # each row's left padding as the previous row's right padding), enough rows and columns
    # for the output, whole phases: Hq = ceil(max(H + ph, sh*Ho) / sh), likewise Wq
    hq = -(-max(h + ph, sh * ho) // sh)
    wq = -(-max(w + pw, sw * wo) // sw)
    rows = tuple((dh * u % sh, (dh * u // sh) * wq) for u in range(kh))
    cols = tuple((dw * v % sw, dw * v // sw) for v in range(kw))
    return Grid((n, c, h, w), (kh, kw), (sh, sw), (ph, pw), (ho, wo), (hq, wq), rows, cols)


def into_cells(image: np.ndarray, cells_hw: tuple[int, int], top: int, left: int) -> np.ndarray:
    """``image`` (R, N, H, W) placed at row ``top``, column ``left`` of zero cells
    (R, N, Hc, Wc). Only the border is zeroed: filling the whole array with zeros first would
    write every value twice (and ``np.zeros`` of a large array costs a page fault per 4 KiB)."""
    r, n, h, w = image.shape
    cells = np.empty((r, n, *cells_hw), dtype=image.dtype)  # (R, N, Hc, Wc)
    cells[:, :, :top] = 0
    cells[:, :, top + h :] = 0
    cells[:, :, top : top + h, :left] = 0
    cells[:, :, top : top + h, left + w :] = 0
    cells[:, :, top : top + h, left : left + w] = image
    return cells


def phases_of(x: np.ndarray, grid: Grid) -> dict[tuple[int, int], np.ndarray]:
    """The zero-padded input, split into the phases some tap reads, each flattened: phase
    (a, b) holds the padded pixels of rows a, a + sh, ... and columns b, b + sw, ...

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    grid : Grid, from :func:`grid_of` for ``x.shape``

    Returns
    -------
    phases : dict, (a, b) -> ndarray of shape (C, N * Hq * Wq)
    """
    c, (sh, sw) = grid.x_shape[1], grid.stride
    (ph, pw), (hq, wq) = grid.padding, grid.grid_hw
    # zero padding, channel-major, rounded up to whole phases: (C, N, sh*Hq, sw*Wq)
    padded = into_cells(x.transpose(1, 0, 2, 3), (sh * hq, sw * wq), ph, pw)
    # phase (a, b): (C, N, Hq, Wq) -> (C, N*Hq*Wq). With stride 1 the one phase is `padded`
    # itself (no copy); otherwise only the phases some tap reads are copied (one of four for
    # a 1×1 kernel with stride 2)
    return {
        (a, b): np.ascontiguousarray(padded[:, :, a::sh, b::sw]).reshape(c, grid.length)
        for a, b in grid.phases_read
    }


def unfold_rows(phases: dict, grid: Grid, start: int, stop: int, out=None) -> np.ndarray:
    r"""The kernel *rows* of grid columns ``start:stop``: for each kernel row u and phase column
    b, one contiguous run of the phase it reads, shifted by the row's offset and long enough
    for every kernel column's further shift.

    Tap (u, v) reads phase :math:`(a_u, b_v)` at the row's offset plus the column's shift
    :math:`\lfloor d_w v / s_w \rfloor`: its columns are this run, shifted by that much
    (:func:`tap_columns`). One copy per kernel row instead of one per tap: kw times less to copy
    (3× for a 3×3 kernel); the product then takes the kernel columns one at a time.

    Parameters
    ----------
    phases : dict, from :func:`phases_of`
    grid : Grid
    start, stop : int, a range of grid columns, ``0 <= start < stop <= N·Hq·Wq``
    out : ndarray, shape (C, kh, B, stop - start + reach), optional: written into and returned,
        with B the number of phase columns read and reach :attr:`Grid.reach`

    Returns
    -------
    rows : ndarray, shape (C, kh, B, stop - start + reach)
    """
    c, kh = grid.x_shape[1], grid.kernel[0]
    column_phases = grid.column_phases
    width = stop - start + grid.reach
    if out is None:
        dtype = next(iter(phases.values())).dtype
        out = np.empty((c, kh, len(column_phases), width), dtype=dtype)
    for u, (a, offset) in enumerate(grid.rows):
        for k, b in enumerate(column_phases):
            # the row's run of the phase, shifted by `offset`; shorter past the last image
            run = phases[a, b][:, start + offset : start + offset + width]
            out[:, u, k, : run.shape[1]] = run
            out[:, u, k, run.shape[1] :] = 0  # past the last image: margin columns only
    return out


def tap_columns(rows: np.ndarray, grid: Grid, v: int, width: int) -> np.ndarray:
    """Kernel column v's taps of a block of :func:`unfold_rows`: the rows (c, u) of the grid
    columns, (C*kh, width), a view (each row a run of the block shifted by the column's shift)."""
    b, shift = grid.cols[v]
    k = grid.column_phases.index(b)
    c, kh = rows.shape[:2]
    # (C, kh, width) with strides (kh*B*W', B*W', 1): C and kh merge into one axis, a view
    return rows[:, :, k, shift : shift + width].reshape(c * kh, width)


def unfold_columns(phases: dict, grid: Grid, start: int, stop: int) -> np.ndarray:
    r"""Columns ``start:stop`` of the grid columns (:func:`unfold`): every tap's rows, taken
    from :func:`unfold_rows`.

    Returns
    -------
    cols : ndarray, shape (C * kh * kw, stop - start), rows ordered (c, u, v)
    """
    (c, kh, kw), width = (grid.x_shape[1], *grid.kernel), stop - start
    rows = unfold_rows(phases, grid, start, stop)  # (C, kh, B, width + reach)
    cols = np.empty((c, kh, kw, width), dtype=rows.dtype)
    for v in range(kw):
        cols[:, :, v] = tap_columns(rows, grid, v, width).reshape(c, kh, width)
    return cols.reshape(c * kh * kw, width)  # (C, kh, kw, width) -> (C*kh*kw, width)


def unfold(x: np.ndarray, grid: Grid) -> np.ndarray:
    r"""The grid columns of ``x``: for every tap, one shifted copy of one phase of the padded
    input.

    .. math:: \mathrm{cols}[(c, u, v),\, (n, i, j)] = x^{\text{pad}}_{n,\,c,\,s_h i + d_h u,\,
              s_w j + d_w v} \qquad (i < H_q,\ j < W_q)

    exactly :func:`im2col`'s entries at the output pixels :math:`i < H_o,\ j < W_o`; the
    margin columns (the others) read past the right or bottom edge, or are 0 past the last
    image.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    grid : Grid, from :func:`grid_of` for ``x.shape``

    Returns
    -------
    cols : ndarray, shape (C * kh * kw, N * Hq * Wq), rows ordered (c, u, v), columns (n, i, j)
    """
    return unfold_columns(phases_of(x, grid), grid, 0, grid.length)


def fold(cols: np.ndarray, grid: Grid) -> np.ndarray:
    r"""Adjoint of :func:`unfold`: add every tap's row block back onto the phase it was copied
    from, then undo the phases and the padding.

    .. math:: x_{n,c,y,z} \mathrel{+}= \mathrm{cols}[(c, u, v),\, (n, i, j)]
              \quad\text{for all } s_h i + d_h u - p_h = y,\; s_w j + d_w v - p_w = z

    A pixel read by several taps (overlapping windows) receives the sum, hence ``+=``.

    Parameters
    ----------
    cols : ndarray, shape (C * kh * kw, N * Hq * Wq)
    grid : Grid, from :func:`grid_of`

    Returns
    -------
    x : ndarray, shape (N, C, H, W), C-contiguous
    """
    (n, c, h, w), (kh, kw) = grid.x_shape, grid.kernel
    (sh, sw), (ph, pw), (hq, wq) = grid.stride, grid.padding, grid.grid_hw
    length = grid.length
    taps = cols.reshape(c, kh * kw, length)  # (C*kh*kw, N*Hq*Wq) -> (C, kh*kw, N*Hq*Wq)
    # the gradient of each phase some tap read, flat (C, N*Hq*Wq)
    phases = {phase: np.zeros((c, length), dtype=cols.dtype) for phase in grid.phases_read}
    for tap, (a, b, offset) in enumerate(grid.taps):
        # taps that read the same pixel add up here: +=, never =. Columns whose tap falls
        # past the last image read zeros in unfold: nothing to add back (all of them when the
        # offset exceeds the grid, on a tiny input)
        inside = max(length - offset, 0)
        phases[a, b][:, offset : offset + inside] += taps[:, tap, :inside]
    if (sh, sw) == (1, 1):  # one phase: it is the padded input's gradient, no copy
        padded = phases[0, 0].reshape(c, n, hq, wq)  # (C, N*Hq*Wq) -> (C, N, Hp, Wp)
    else:  # each phase back to its rows and columns; unread pixels get 0
        padded = np.zeros((c, n, sh * hq, sw * wq), dtype=cols.dtype)
        for (a, b), phase in phases.items():
            # (C, N*Hq*Wq) -> (C, N, Hq, Wq): rows a, a + sh, ..., columns b, b + sw, ...
            padded[:, :, a::sh, b::sw] = phase.reshape(c, n, hq, wq)
    # crop the padding; (C, N, H, W) -> (N, C, H, W)
    return np.ascontiguousarray(padded[:, :, ph : ph + h, pw : pw + w].transpose(1, 0, 2, 3))


def crop_grid(mat: np.ndarray, grid: Grid) -> np.ndarray:
    """The output pixels' columns of a grid matrix: (R, N*Hq*Wq) -> (R, N, Ho, Wo), a view."""
    (hq, wq), (ho, wo) = grid.grid_hw, grid.out_hw
    return mat.reshape(len(mat), grid.x_shape[0], hq, wq)[:, :, :ho, :wo]


def embed_grid(image_mat: np.ndarray, grid: Grid) -> np.ndarray:
    """Adjoint of :func:`crop_grid`: (R, N, Ho, Wo) into a zero grid matrix (R, N*Hq*Wq)."""
    mat = into_cells(image_mat, grid.grid_hw, 0, 0)  # (R, N, Hq, Wq), 0 in the margin
    return mat.reshape(len(image_mat), grid.length)  # (R, N, Hq, Wq) -> (R, N*Hq*Wq)


def im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    r"""Unfold every receptive field of the zero-padded input into a column.

    .. math:: \mathrm{cols}[(c, u, v),\, (n, i, j)] = x^{\text{pad}}_{n,\,c,\,s_h i + d_h u,\,
              s_w j + d_w v}

    One column per output pixel, one row per kernel tap (c, u, v) (Caffe's layout, with the
    batch added). Computed as :func:`unfold`'s grid columns at the output pixels.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel : (kh, kw)
    stride : (sh, sw)
    padding : (ph, pw), zeros added on each side
    dilation : (dh, dw), the spacing of the kernel's taps (1: adjacent pixels)

    Returns
    -------
    cols : ndarray, shape (C * kh * kw, N * Ho * Wo), rows ordered (c, u, v), columns (n, i, j)
    """
    grid = grid_of(x.shape, kernel, stride, padding, dilation)
    cols = crop_grid(unfold(x, grid), grid)  # (C*kh*kw, N, Ho, Wo)
    return cols.reshape(len(cols), -1)  # (C*kh*kw, N, Ho, Wo) -> (C*kh*kw, N*Ho*Wo): a copy


def col2im(
    cols: np.ndarray,
    x_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    r"""Adjoint of :func:`im2col`: add every column back onto its receptive field.

    .. math:: x_{n,c,y,z} \mathrel{+}= \mathrm{cols}[(c, u, v),\, (n, i, j)]
              \quad\text{for all } s_h i + d_h u - p_h = y,\; s_w j + d_w v - p_w = z

    Computed as :func:`fold` of the columns placed at the output pixels of a zero grid
    (:func:`embed_grid`): kh·kw additions of one shifted slice each, where windows overlap
    the sum of several columns.

    Parameters
    ----------
    cols : ndarray, shape (C * kh * kw, N * Ho * Wo)
    x_shape : (N, C, H, W), the shape of the input of :func:`im2col`
    kernel, stride, padding, dilation : as for :func:`im2col`

    Returns
    -------
    x : ndarray, shape (N, C, H, W), C-contiguous
    """
    grid = grid_of(x_shape, kernel, stride, padding, dilation)
    n, (ho, wo) = x_shape[0], grid.out_hw
    # (C*kh*kw, N*Ho*Wo) -> (C*kh*kw, N, Ho, Wo) -> grid (C*kh*kw, N*Hq*Wq)
    return fold(embed_grid(cols.reshape(len(cols), n, ho, wo), grid), grid)
