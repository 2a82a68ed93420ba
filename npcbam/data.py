r"""Synthetic data sets on which CBAM's two attentions have a job: *where* and *what*.

Both are generated from a seed with NumPy alone (nothing is downloaded), and the same seed and
arguments always give the same arrays. Each has four exactly balanced classes.

``"where"``: find the object
    A (C, 24, 24) image holds **one** 5×5 glyph (a plus, a diagonal cross, a T or an L) at a
    uniformly random position, among clutter: 2-pixel strokes in four orientations and single
    dots, scattered over the rest of the image, plus Gaussian pixel noise. The class is the
    glyph's shape, and ``boxes`` gives where it is. The design keeps global statistics blind to
    the class: every glyph has exactly 9 pixels, glyph and strokes draw their colours from the
    same distribution, and the number of strokes varies from image to image; so the
    distribution of the image's pixel *values* (hence its per-channel mean, max, std, ...) is
    the same for every class. Clutter never enters the glyph's box or the 1-pixel ring around
    it, so the glyph is never broken or extended, and 2-pixel fragments cannot form a copy of
    a 9-pixel glyph by themselves. Reading the class therefore takes a local shape detector
    looking at the right place, which is what spatial attention is for.

``"what"``: find the channels
    A (C, 16, 16) image with C = 16 channels, each a sinusoidal grating of random phase plus
    Gaussian noise. In ``n_informative`` channels (2 by default, chosen from the seed and
    reported in ``informative_channels``) the grating's orientation is the class: horizontal,
    vertical, rising (``/``) or falling (``\``) stripes. In every other channel it is drawn at
    random, independently of the class. All channels therefore have the same per-pixel
    distribution, and position carries nothing (the phase is a random shift); the class is in
    *which* channels one reads, which is what channel attention is for. The wave vectors are
    chosen so that each grating, whatever its orientation, takes every value of the same set
    equally often over the image: a channel's mean is exactly zero and its std, max and
    histogram do not depend on the class, so no single channel's global statistic gives the
    class away either.

Use :func:`load_task` for a train and a test set drawn from independent streams of one seed,
or :func:`make_where_task` / :func:`make_what_task` for one set (the train set of
:func:`load_task` with the same seed).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from npcbam._checks import require_int

__all__ = ["TASKS", "Dataset", "load_task", "make_what_task", "make_where_task"]

TASKS = ("where", "what")

# --- "where": glyphs, clutter, scaling -------------------------------------------------------

_GLYPH_ART = {
    "plus": ("..#..", "..#..", "#####", "..#..", "..#.."),
    "cross": ("#...#", ".#.#.", "..#..", ".#.#.", "#...#"),
    "tee": ("#####", "..#..", "..#..", "..#..", "..#.."),
    "ell": ("#....", "#....", "#....", "#....", "#####"),
}
WHERE_CLASSES = tuple(_GLYPH_ART)
# (n_classes, 5, 5) float32 masks; every glyph has 9 pixels and fills its 5×5 box
_GLYPHS = np.array(
    [[[ch == "#" for ch in row] for row in art] for art in _GLYPH_ART.values()], dtype=np.float32
)
GLYPH_SIZE = _GLYPHS.shape[1]
# clutter: a dot or a 2-pixel stroke, as (row, column) steps from the first pixel to the second
_STROKE_STEPS = np.array([(0, 0), (0, 1), (1, 0), (1, 1), (1, -1)])
_COLOUR_RANGE = (0.5, 1.0)  # every channel of the glyph's and of each stroke's colour
# a fixed affine map, the same for every data set (so train and test share it), that brings the
# default task to mean ~0 and std ~1: images = (raw - _WHERE_SHIFT) / _WHERE_SCALE
_WHERE_SHIFT = 0.04
_WHERE_SCALE = 0.17

# --- "what": gratings ---------------------------------------------------------------------------

WHAT_CLASSES = ("horizontal", "vertical", "rising", "falling")
_WHAT_MIN_SIZE = 8
_TARGET_WAVELENGTH = 4.0  # pixels, along the wave vector


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A labelled image set; its arrays are read-only.

    Attributes
    ----------
    images : ndarray, shape (N, C, H, W), float32
        Standardised images (mean about 0, std about 1).
    labels : ndarray, shape (N,), int64
        Class indices in ``[0, len(class_names))``.
    boxes : ndarray, shape (N, 4), int64, or None
        ``"where"`` task: the glyph's box ``(top, left, bottom, right)``, bottom and right
        exclusive, so ``images[i, :, top:bottom, left:right]`` is the glyph. None for ``"what"``.
    class_names : tuple of str
        The name of each class, indexed by label.
    task : str
        ``"where"`` or ``"what"``.
    informative_channels : tuple of int or None
        ``"what"`` task: the channels whose content depends on the class (sorted). None for
        ``"where"``.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray | None
    class_names: tuple[str, ...]
    task: str
    informative_channels: tuple[int, ...] | None

    def __post_init__(self) -> None:
        images, labels = np.asarray(self.images), np.asarray(self.labels)
        if images.ndim != 4 or images.dtype != np.float32:
            raise ValueError(
                f"images must be a 4-D (N, C, H, W) float32 array, got shape {images.shape} "
                f"and dtype {images.dtype}"
            )
        n = images.shape[0]
        if labels.shape != (n,) or labels.dtype != np.int64:
            raise ValueError(
                f"labels must be an int64 array of shape ({n},), got shape {labels.shape} and "
                f"dtype {labels.dtype}"
            )
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(
                f"labels must lie in [0, {len(self.class_names)}), got values from "
                f"{labels.min()} to {labels.max()}"
            )
        boxes = None
        if self.boxes is not None:
            boxes = np.asarray(self.boxes)
            if boxes.shape != (n, 4) or boxes.dtype != np.int64:
                raise ValueError(
                    f"boxes must be an int64 array of shape ({n}, 4), got shape {boxes.shape} "
                    f"and dtype {boxes.dtype}"
                )
        # read-only views: a frozen data set, without touching the caller's arrays' flags
        for name, array in (("images", images), ("labels", labels), ("boxes", boxes)):
            if array is not None:
                view = array.view()
                view.flags.writeable = False
                object.__setattr__(self, name, view)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.informative_channels is not None:
            object.__setattr__(
                self, "informative_channels", tuple(int(c) for c in self.informative_channels)
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        extra = (
            f", informative_channels={self.informative_channels}"
            if self.informative_channels is not None
            else ""
        )
        return (
            f"Dataset(task={self.task!r}, n={n}, images=({n}, {c}, {h}, {w}) float32, "
            f"class_names={self.class_names}{extra})"
        )

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterate over the data set once, in batches.

        Parameters
        ----------
        batch_size : int
            Samples per batch (>= 1); the last batch holds the remainder and may be smaller.
        rng : numpy Generator, optional
            If given, the samples come in the order of ``rng.permutation(len(self))``;
            otherwise in their stored order.

        Yields
        ------
        images : ndarray, shape (B, C, H, W), float32
        labels : ndarray, shape (B,), int64
        """
        batch_size = require_int(batch_size, "batch_size", 1)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"rng must be a numpy Generator (np.random.default_rng(seed)) or None, "
                f"got {type(rng).__name__}"
            )
        n = len(self)
        order = np.arange(n) if rng is None else rng.permutation(n)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            yield self.images[index], self.labels[index]


# --- argument checks -----------------------------------------------------------------------------


def _require_nonnegative_float(value, name: str) -> float:
    """Return ``value`` as a float, raising unless it is a finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def _balanced_labels(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    """(n,) int64: a random permutation of 0, 1, ..., n_classes - 1, 0, 1, ... (round-robin),
    so class counts differ by at most one."""
    return rng.permutation(np.arange(n, dtype=np.int64) % n_classes)


# --- "where" -------------------------------------------------------------------------------------


class _WhereConfig(NamedTuple):
    image_size: int
    channels: int
    clutter: int
    noise: float


def _where_config(image_size=24, channels=3, clutter=16, noise=0.05) -> _WhereConfig:
    size = require_int(image_size, "image_size", 1)
    if size < GLYPH_SIZE:
        raise ValueError(
            f"image_size={size} is too small for the {GLYPH_SIZE}x{GLYPH_SIZE} glyph; "
            f"expected image_size >= {GLYPH_SIZE}"
        )
    return _WhereConfig(
        size,
        require_int(channels, "channels", 1),
        require_int(clutter, "clutter", 0),
        _require_nonnegative_float(noise, "noise"),
    )


class _WhereScene(NamedTuple):
    """Everything random about a batch of "where" images, before drawing."""

    labels: np.ndarray  # (N,) int64
    tops: np.ndarray  # (N,) int64, the glyph's top row
    lefts: np.ndarray  # (N,) int64, the glyph's left column
    glyph_colours: np.ndarray  # (N, C) float32
    stroke_rows: np.ndarray  # (N, K) int64, first pixel of each stroke
    stroke_cols: np.ndarray  # (N, K) int64
    stroke_kinds: np.ndarray  # (N, K) int64, index into _STROKE_STEPS
    stroke_colours: np.ndarray  # (N, K, C) float32
    stroke_kept: np.ndarray  # (N, K) bool: drawn (within the image's count, clear of the glyph)
    noise: np.ndarray  # (N, C, H, W) float32


def _where_scene(rng: np.random.Generator, n: int, cfg: _WhereConfig) -> _WhereScene:
    """Draw the random content of ``n`` "where" images (in a fixed order, for determinism)."""
    size, c, k = cfg.image_size, cfg.channels, cfg.clutter
    labels = _balanced_labels(rng, n, len(WHERE_CLASSES))
    tops = rng.integers(0, size - GLYPH_SIZE + 1, size=n)
    lefts = rng.integers(0, size - GLYPH_SIZE + 1, size=n)
    glyph_colours = rng.uniform(*_COLOUR_RANGE, size=(n, c)).astype(np.float32)
    counts = rng.integers(k // 2, k + 1, size=n)  # strokes per image
    # first pixels in rows [0, size - 2], columns [1, size - 2]: every step stays inside
    rows = rng.integers(0, size - 1, size=(n, k))
    cols = rng.integers(1, size - 1, size=(n, k))
    kinds = rng.integers(0, len(_STROKE_STEPS), size=(n, k))
    stroke_colours = rng.uniform(*_COLOUR_RANGE, size=(n, k, c)).astype(np.float32)
    noise = rng.standard_normal((n, c, size, size), dtype=np.float32) * np.float32(cfg.noise)

    def near_glyph(r, q):  # inside the glyph's box grown by one pixel on every side
        return (
            (r >= tops[:, None] - 1)
            & (r <= tops[:, None] + GLYPH_SIZE)
            & (q >= lefts[:, None] - 1)
            & (q <= lefts[:, None] + GLYPH_SIZE)
        )

    steps = _STROKE_STEPS[kinds]  # (N, K, 2)
    kept = (
        (np.arange(k) < counts[:, None])
        & ~near_glyph(rows, cols)
        & ~near_glyph(rows + steps[..., 0], cols + steps[..., 1])
    )
    return _WhereScene(
        labels, tops, lefts, glyph_colours, rows, cols, kinds, stroke_colours, kept, noise
    )


def _render_where(
    scene: _WhereScene, glyphs: np.ndarray = _GLYPHS, draw_glyph: bool = True
) -> np.ndarray:
    """Draw a scene: (N, C, H, W) float32 raw images, values roughly in [0, 1].

    ``glyphs`` (n_classes, 5, 5) are the masks drawn for each label, and ``draw_glyph=False``
    leaves the glyph out; both exist for tests (a class-leaking glyph set, the glyph's exact
    footprint).
    """
    n, c, size, _ = scene.noise.shape
    canvas = np.zeros((n, size, size, c), np.float32)  # channels last while drawing
    # clutter: the brighter colour wins where strokes overlap
    sample, stroke = np.nonzero(scene.stroke_kept)
    steps = _STROKE_STEPS[scene.stroke_kinds[sample, stroke]]
    r0, c0 = scene.stroke_rows[sample, stroke], scene.stroke_cols[sample, stroke]
    colours = scene.stroke_colours[sample, stroke]
    np.maximum.at(canvas, (sample, r0, c0), colours)
    np.maximum.at(canvas, (sample, r0 + steps[:, 0], c0 + steps[:, 1]), colours)
    if draw_glyph:  # the box holds no clutter, so the glyph is simply written in
        offsets = np.arange(GLYPH_SIZE)
        rows = scene.tops[:, None, None] + offsets[None, :, None]  # (N, 5, 1)
        cols = scene.lefts[:, None, None] + offsets[None, None, :]  # (N, 1, 5)
        patch = glyphs[scene.labels][..., None] * scene.glyph_colours[:, None, None, :]
        canvas[np.arange(n)[:, None, None], rows, cols] = patch  # (N, 5, 5, C)
    return canvas.transpose(0, 3, 1, 2) + scene.noise


def _standardise_where(raw: np.ndarray) -> np.ndarray:
    return ((raw - np.float32(_WHERE_SHIFT)) / np.float32(_WHERE_SCALE)).astype(np.float32)


def _where_dataset(rng: np.random.Generator, n: int, cfg: _WhereConfig) -> Dataset:
    scene = _where_scene(rng, n, cfg)
    boxes = np.stack(
        [scene.tops, scene.lefts, scene.tops + GLYPH_SIZE, scene.lefts + GLYPH_SIZE], axis=1
    ).astype(np.int64)
    return Dataset(
        images=np.ascontiguousarray(_standardise_where(_render_where(scene))),
        labels=scene.labels,
        boxes=boxes,
        class_names=WHERE_CLASSES,
        task="where",
        informative_channels=None,
    )


def make_where_task(
    n_samples: int,
    *,
    image_size: int = 24,
    channels: int = 3,
    seed: int = 0,
    clutter: int = 16,
    noise: float = 0.05,
) -> Dataset:
    """The "where" task: name the one 5×5 glyph hidden among clutter.

    Classes (``class_names``): ``plus``, ``cross`` (a diagonal X), ``tee`` and ``ell``, each
    exactly 9 pixels filling a 5×5 box, placed uniformly at random fully inside the image in one
    random colour (every channel uniform in [0.5, 1]). Clutter: between ``clutter // 2`` and
    ``clutter`` items per image, each a dot or a 2-pixel stroke (horizontal, vertical or either
    diagonal) in its own colour from the same distribution, placed at random but never in the
    glyph's box or the 1-pixel ring around it. Gaussian noise of std ``noise`` is added to every
    pixel, then the fixed map ``(raw - 0.04) / 0.17`` standardises the default task.

    Parameters
    ----------
    n_samples : int
        N, the number of images (>= 1). Classes are balanced: their counts differ by at most
        one (exactly equal when N is a multiple of 4).
    image_size : int
        H = W (>= 5, the glyph's size). The glyph covers 25 / H² of the image (4.3 % at 24).
    channels : int
        C (>= 1).
    seed : int
        Seed (>= 0); the images come from ``np.random.default_rng([seed, 0])``, the stream of
        the train set of :func:`load_task`.
    clutter : int
        The largest number of clutter items per image (>= 0).
    noise : float
        Std of the Gaussian pixel noise, in raw units (>= 0).

    Returns
    -------
    Dataset
        ``images`` (N, C, H, W) float32, ``labels`` (N,) int64, ``boxes`` (N, 4) int64
        ``(top, left, bottom, right)`` of the glyph (bottom, right exclusive),
        ``informative_channels`` None.
    """
    n = require_int(n_samples, "n_samples", 1)
    cfg = _where_config(image_size, channels, clutter, noise)
    seed = require_int(seed, "seed", 0)
    return _where_dataset(np.random.default_rng([seed, 0]), n, cfg)


# --- "what" --------------------------------------------------------------------------------------


class _WhatConfig(NamedTuple):
    channels: int
    n_informative: int
    image_size: int
    noise: float


def _what_config(channels=16, n_informative=2, image_size=16, noise=1.0) -> _WhatConfig:
    c = require_int(channels, "channels", 1)
    k = require_int(n_informative, "n_informative", 1)
    if k > c:
        raise ValueError(
            f"n_informative={k} exceeds channels={c}; expected 1 <= n_informative <= channels"
        )
    size = require_int(image_size, "image_size", 1)
    if size < _WHAT_MIN_SIZE:
        raise ValueError(
            f"image_size={size} is too small for a grating; expected image_size >= {_WHAT_MIN_SIZE}"
        )
    return _WhatConfig(c, k, size, _require_nonnegative_float(noise, "noise"))


def _nearest_coprime(target: float, size: int) -> int:
    """The integer in [1, size // 2) coprime with ``size`` nearest ``target`` (ties: lower)."""
    candidates = [f for f in range(1, size // 2) if math.gcd(f, size) == 1]
    return min(candidates, key=lambda f: (abs(f - target), f))


def _wave_vectors(size: int) -> np.ndarray:
    """(4, 2) integer wave vectors (cycles per image along rows, columns), one per class.

    Each component is coprime with ``size``, so ``(a * row + b * col) mod size`` takes every
    value equally often over the image: all four gratings, at any phase, have the same
    histogram of pixel values and an exact mean of zero. The wavelengths are about
    :data:`_TARGET_WAVELENGTH` pixels.
    """
    f = _nearest_coprime(size / _TARGET_WAVELENGTH, size)
    g = _nearest_coprime(size / (_TARGET_WAVELENGTH * math.sqrt(2)), size)
    # horizontal stripes vary along rows; rising stripes ("/") are lines of constant row + col
    return np.array([(f, 0), (0, f), (g, g), (g, -g)])


def _gratings(orientations: np.ndarray, phases: np.ndarray, size: int) -> np.ndarray:
    """cos(2π (a·row + b·col) / size + phase) for each entry: (..., size, size) float32 from
    ``orientations`` (...) (indices into :func:`_wave_vectors`) and ``phases`` (...).

    Written as cos(θ + φ) = cos θ cos φ - sin θ sin φ, so only the four (size, size) patterns
    cos θ and sin θ are evaluated, then scaled per image and channel.
    """
    vectors = _wave_vectors(size)
    grid = np.arange(size)
    theta = (  # (4, size, size) wave angle at each pixel
        2
        * np.pi
        / size
        * (vectors[:, 0, None, None] * grid[:, None] + vectors[:, 1, None, None] * grid[None, :])
    )
    cos_theta, sin_theta = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    cos_phi = np.cos(phases).astype(np.float32)[..., None, None]
    sin_phi = np.sin(phases).astype(np.float32)[..., None, None]
    out = cos_theta[orientations]
    out *= cos_phi
    sin_part = sin_theta[orientations]
    sin_part *= sin_phi
    out -= sin_part
    return out


def _informative_channels(seed: int, cfg: _WhatConfig) -> tuple[int, ...]:
    """The informative channels of every "what" set with this seed (train and test alike)."""
    chosen = np.random.default_rng([seed, 2]).choice(cfg.channels, cfg.n_informative, replace=False)
    return tuple(sorted(int(c) for c in chosen))


def _what_dataset(
    rng: np.random.Generator, n: int, cfg: _WhatConfig, informative: tuple[int, ...]
) -> Dataset:
    c, size = cfg.channels, cfg.image_size
    labels = _balanced_labels(rng, n, len(WHAT_CLASSES))
    orientations = rng.integers(0, len(WHAT_CLASSES), size=(n, c))  # distractor channels
    orientations[:, list(informative)] = labels[:, None]
    phases = rng.uniform(0.0, 2 * np.pi, size=(n, c))
    noise = rng.standard_normal((n, c, size, size), dtype=np.float32)
    images = _gratings(orientations, phases, size)
    noise *= np.float32(cfg.noise)
    images += noise
    # a grating with random phase has mean 0 and variance 1/2: the exact standardisation
    images /= np.float32(math.sqrt(0.5 + cfg.noise**2))
    return Dataset(
        images=images,
        labels=labels,
        boxes=None,
        class_names=WHAT_CLASSES,
        task="what",
        informative_channels=informative,
    )


def make_what_task(
    n_samples: int,
    *,
    channels: int = 16,
    n_informative: int = 2,
    image_size: int = 16,
    seed: int = 0,
    noise: float = 1.0,
) -> Dataset:
    r"""The "what" task: read the stripe orientation in the few channels that carry it.

    Every channel is a grating ``cos(2π (a·row + b·col) / H + φ)`` of amplitude 1 with its own
    uniform random phase φ, plus Gaussian noise of std ``noise``; the whole is divided by
    ``sqrt(1/2 + noise²)``, so every pixel has mean 0 and variance 1. The wave vector (a, b) is
    one of four: horizontal ``(f, 0)``, vertical ``(0, f)``, rising ``(g, g)`` and falling
    ``(g, -g)`` stripes, wavelength about 4 pixels (f, g coprime with H; f = 3, g = 3 at H = 16).
    In the informative channels it is the class; in the others it is uniform at random,
    independently per channel and image.

    Parameters
    ----------
    n_samples : int
        N, the number of images (>= 1). Classes are balanced: their counts differ by at most
        one (exactly equal when N is a multiple of 4).
    channels : int
        C (>= 1).
    n_informative : int
        How many channels carry the class (1 <= n_informative <= C). Which ones is drawn from
        ``seed`` alone (``np.random.default_rng([seed, 2])``), so the train and test sets of
        :func:`load_task` share them.
    image_size : int
        H = W (>= 8).
    seed : int
        Seed (>= 0); the images come from ``np.random.default_rng([seed, 0])``, the stream of
        the train set of :func:`load_task`.
    noise : float
        Std of the Gaussian noise relative to the grating's amplitude (>= 0).

    Returns
    -------
    Dataset
        ``images`` (N, C, H, W) float32, ``labels`` (N,) int64, ``boxes`` None,
        ``informative_channels`` the sorted tuple of informative channel indices.
    """
    n = require_int(n_samples, "n_samples", 1)
    cfg = _what_config(channels, n_informative, image_size, noise)
    seed = require_int(seed, "seed", 0)
    return _what_dataset(np.random.default_rng([seed, 0]), n, cfg, _informative_channels(seed, cfg))


# --- both ----------------------------------------------------------------------------------------


def load_task(
    task: str, n_train: int, n_test: int, *, seed: int = 0, **options
) -> tuple[Dataset, Dataset]:
    """A train and a test set of one task, from independent random streams of one seed.

    Parameters
    ----------
    task : str
        One of :data:`TASKS`: ``"where"`` (:func:`make_where_task`) or ``"what"``
        (:func:`make_what_task`).
    n_train, n_test : int
        Sizes of the two sets (>= 1 each).
    seed : int
        Seed (>= 0). The train set comes from ``np.random.default_rng([seed, 0])`` (it equals
        ``make_<task>_task(n_train, seed=seed, **options)``), the test set from
        ``np.random.default_rng([seed, 1])``; the informative channels of ``"what"`` are the
        same in both.
    **options
        Keyword arguments of the task's ``make_*`` function (``image_size``, ``channels``, ...).

    Returns
    -------
    train, test : Dataset
    """
    if not isinstance(task, str):
        raise TypeError(f"task must be a string, one of {TASKS}; got {task!r}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    n_train = require_int(n_train, "n_train", 1)
    n_test = require_int(n_test, "n_test", 1)
    seed = require_int(seed, "seed", 0)
    configure = _where_config if task == "where" else _what_config
    allowed = tuple(inspect.signature(configure).parameters)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"load_task({task!r}) got unknown option(s) {unknown}; the {task!r} task takes "
            f"{', '.join(allowed)}"
        )
    cfg = configure(**options)
    streams = (np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1]))
    if task == "where":
        return tuple(_where_dataset(rng, n, cfg) for rng, n in zip(streams, (n_train, n_test)))
    informative = _informative_channels(seed, cfg)
    return tuple(
        _what_dataset(rng, n, cfg, informative) for rng, n in zip(streams, (n_train, n_test))
    )
