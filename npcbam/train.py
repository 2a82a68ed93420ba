r"""Training the demo classifier on a synthetic task: the loop, evaluation, and attention
statistics.

One step is the textbook sequence, written out: forward, softmax cross-entropy, zero the
gradients, manual backward, optimizer step (Adam, PyTorch's rule).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import sys
import time
from collections.abc import Callable

import numpy as np

from npcbam._blas import fixed_blas_threads
from npcbam._checks import require_int
from npcbam.data import TASKS, Dataset, load_task
from npcbam.gradcam import box_mass_share, grad_cams, peak_in_box, spatial_maps_upsampled
from npcbam.nn.classifier import AttentionClassifier
from npcbam.nn.residual import ATTENTIONS
from npcbam.ops.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from npcbam.optim import Adam


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train_classifier`; the defaults are those of ``npcbam train``.

    ``attention_options`` go to every block's attention (:func:`npcbam.nn.residual.make_attention`),
    ``task_options`` to :func:`npcbam.data.load_task` (e.g. ``clutter``, ``noise``);
    ``attention_stats=False`` skips :func:`attention_in_box` (Grad-CAM and spatial maps on the
    test set before and after training, which can cost more than a small training run).

    ``blas_threads`` is the number of threads NumPy's BLAS (OpenBLAS) runs on during the run,
    restored afterwards. A seeded run is bit-identical for a given number whatever the
    environment says (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``, the number of cores): how
    BLAS splits a product between threads changes how its float32 sums round. The default, one
    thread, makes every run of the same seed give the same model (and was not slower than two on
    the 2-core machine this was measured on); ``None`` keeps the environment's setting, whose
    results then depend on it (see :mod:`npcbam._blas`).
    """

    task: str = "where"
    attention: str = "cbam"
    epochs: int = 4
    batch_size: int = 64
    lr: float = 3e-3
    n_train: int = 4000
    n_test: int = 1000
    widths: tuple[int, ...] = (16, 32)
    reduction: int = 4
    kernel_size: int = 7
    seed: int = 0
    attention_options: dict = dataclasses.field(default_factory=dict)
    task_options: dict = dataclasses.field(default_factory=dict)
    attention_stats: bool = True
    blas_threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "n_train", "n_test"):
            require_int(getattr(self, name), name, 1)
        if self.blas_threads is not None:
            require_int(self.blas_threads, "blas_threads", 1)
        require_int(self.seed, "seed", 0)
        if isinstance(self.lr, bool) or not isinstance(self.lr, numbers.Real):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}; expected one of {TASKS}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention={self.attention!r}; expected one of {ATTENTIONS}")
        if self.attention == "bam" and 1 in (self.batch_size, self.n_train % self.batch_size):
            # BAM's BatchNorm1d normalises over the batch: one image has no batch statistics
            raise ValueError(
                f"attention='bam' cannot train on a batch of one image (batch_size="
                f"{self.batch_size}, n_train={self.n_train}: the last batch holds "
                f"{self.n_train % self.batch_size or self.batch_size}); BAM's BatchNorm1d "
                "normalises over the batch; choose batch_size and n_train so that no batch "
                "holds a single image"
            )


@dataclasses.dataclass
class TrainResult:
    """What a training run produced: the model, per-epoch history and final figures."""

    model: AttentionClassifier
    config: TrainConfig
    history: list[dict[str, float]]
    test_accuracy: float
    train_seconds: float
    attention_in_box: dict | None
    attention_in_box_at_init: dict | None
    blas_threads: int | None = None  # threads BLAS ran on (None: unknown, not OpenBLAS)

    def summary(self) -> dict:
        """A JSON-ready dict of the results (no arrays, no model)."""
        return {
            "task": self.config.task,
            "attention": self.config.attention,
            "test_accuracy": self.test_accuracy,
            "train_accuracy": self.history[-1]["train_accuracy"],
            "train_seconds": self.train_seconds,
            "blas_threads": self.blas_threads,
            "attention_in_box": self.attention_in_box,
            "attention_in_box_at_init": self.attention_in_box_at_init,
            "parameters": int(sum(p.size for p in self.model.parameters().values())),
            "config": dataclasses.asdict(self.config),
            "history": self.history,
        }


def build_model(config: TrainConfig, dataset: Dataset) -> AttentionClassifier:
    """The classifier ``config`` describes, sized for ``dataset``'s channels and classes,
    initialised from ``config.seed``."""
    return AttentionClassifier(
        dataset.images.shape[1],
        len(dataset.class_names),
        widths=config.widths,
        attention=config.attention,
        reduction=config.reduction,
        kernel_size=config.kernel_size,
        seed=config.seed,
        attention_options=config.attention_options,
    )


def accuracy(model: AttentionClassifier, dataset: Dataset, batch_size: int = 250) -> float:
    """Fraction of ``dataset`` classified correctly, in evaluation mode."""
    return float((model.predict(dataset.images, batch_size) == dataset.labels).mean())


def attention_in_box(model: AttentionClassifier, dataset: Dataset, batch_size: int = 50):
    """How much of the model's attention falls on the object's box ("where" task).

    Two maps per block: its spatial attention :math:`M_s` (when it has one) and Grad-CAM of
    the true class at the block's output, both upsampled to the image. For each, over
    ``dataset``:

    * ``mass_share``: the mean share of the map's mass inside the box
      (:func:`~npcbam.gradcam.box_mass_share`); a uniform map scores ``box_area``;
    * ``peak_in_box``: the fraction of images whose map peaks inside the box (the pointing
      game, :func:`~npcbam.gradcam.peak_in_box`); a map blind to position scores about
      ``box_area``.

    Sigmoid gates are rarely far from saturation, so a spatial map can point at the object
    almost always while its mass share stays close to the box's area: both are reported. The
    maps are computed in float64 (the model's float64 parameters applied to the images cast to
    float64): in float32, saturated gates round to exactly 1.0 at several pixels, a tie for
    the maximum.

    The images go through in batches of ``batch_size``. In evaluation mode every image's maps
    are computed independently of the others, so the batch size changes the result by float64
    rounding at most (none at 50, 100 and 250 on the default model and test set, bit for bit).
    Batches of 50 rather than 250 made this 1.6-1.8x faster (1000 "where" test images, one
    BLAS thread): at 250 images the float64 columns of a 3x3 convolution of the first block
    are (250 * 24 * 24, 16 * 9) * 8 bytes = 166 MB, at 50 a fifth of that, closer to what the
    CPU caches hold. Grad-CAM's backward stops at the first block
    (:func:`~npcbam.gradcam.grad_cams`).

    Returns
    -------
    dict or None (when ``dataset`` has no boxes)
        ``"box_area"``: float; ``"spatial/blocks.<k>"`` and ``"grad_cam/blocks.<k>"``:
        ``{"mass_share": float, "peak_in_box": float}``.
    """
    if dataset.boxes is None:
        return None
    blocks = [f"blocks.{k}" for k in range(len(model.blocks))]
    shares: dict[str, list[np.ndarray]] = {}
    hits: dict[str, list[np.ndarray]] = {}
    areas = []
    for start in range(0, len(dataset), batch_size):
        # float64: in float32 a saturated sigmoid gate rounds to exactly 1.0 at several
        # pixels, and the position of the maximum would be decided by a tie
        images = dataset.images[start : start + batch_size].astype(np.float64)
        boxes = dataset.boxes[start : start + batch_size]
        labels = dataset.labels[start : start + batch_size]
        _, cams = grad_cams(model, images, labels, blocks)  # one forward and one backward
        maps = spatial_maps_upsampled(model, images.shape[2:])  # from that same forward
        maps.update({f"grad_cam/{block}": cam for block, cam in cams.items()})
        for name, batch_maps in maps.items():
            share, area = box_mass_share(batch_maps, boxes)
            shares.setdefault(name, []).append(share)
            hits.setdefault(name, []).append(peak_in_box(batch_maps, boxes))
        areas.append(area)
    result: dict = {"box_area": float(np.concatenate(areas).mean())}
    for name in shares:
        result[name] = {
            "mass_share": float(np.concatenate(shares[name]).mean()),
            "peak_in_box": float(np.concatenate(hits[name]).mean()),
        }
    return result


def _progress_bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def train_classifier(
    config: TrainConfig = TrainConfig(), log: Callable[[str], None] | None = print
) -> TrainResult:
    """Train an :class:`AttentionClassifier` on a synthetic task and evaluate it.

    Parameters
    ----------
    config : TrainConfig
    log : callable or None
        Receives one line per epoch (train loss and accuracy, test accuracy, time); progress
        within an epoch goes to stderr when it is a terminal. None: silent.

    Returns
    -------
    TrainResult
    """
    with fixed_blas_threads(config.blas_threads) as threads:
        return _train_classifier(config, log, threads)


def _train_classifier(
    config: TrainConfig, log: Callable[[str], None] | None, threads: int | None
) -> TrainResult:
    """:func:`train_classifier`'s run, with BLAS already on ``threads`` threads."""
    say = log or (lambda line: None)
    train_set, test_set = load_task(
        config.task, config.n_train, config.n_test, seed=config.seed, **config.task_options
    )
    model = build_model(config, train_set)
    # the same statistics before any training: the glyph is the brightest, densest spot of
    # its image, so even random weights may point at it; what training adds is the difference
    at_init = attention_in_box(model, test_set) if config.attention_stats else None
    optimizer = Adam(model, lr=config.lr)
    rng = np.random.default_rng([config.seed, 2])  # batch order
    n_batches = -(-len(train_set) // config.batch_size)
    live = log is not None and sys.stderr.isatty()
    history, start = [], time.perf_counter()
    n_parameters = sum(p.size for p in model.parameters().values())
    say(
        f"training {config.attention!r} classifier ({n_parameters} parameters) on "
        f"{config.task!r}: {len(train_set)} train / {len(test_set)} test images, "
        f"{config.epochs} epochs; BLAS threads: {'unknown' if threads is None else threads}"
    )
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss_sum, correct = 0.0, 0
        for step, (images, labels) in enumerate(train_set.batches(config.batch_size, rng), 1):
            logits = model.forward(images)  # (B, K)
            loss, loss_cache = softmax_cross_entropy_forward(logits, labels)
            model.zero_grad()
            model.backward(softmax_cross_entropy_backward(1.0, loss_cache))
            optimizer.step()
            loss_sum += loss * len(labels)
            correct += int((logits.argmax(axis=1) == labels).sum())
            if live:
                print(
                    f"\r  epoch {epoch} {_progress_bar(step, n_batches)}", end="", file=sys.stderr
                )
        if live:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
        test_accuracy = accuracy(model, test_set)
        record = {
            "epoch": epoch,
            "loss": loss_sum / len(train_set),
            "train_accuracy": correct / len(train_set),
            "test_accuracy": test_accuracy,
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        say(
            f"epoch {epoch}/{config.epochs}  loss {record['loss']:.4f}  train accuracy "
            f"{record['train_accuracy']:.3f}  test accuracy {test_accuracy:.3f}  "
            f"({record['seconds']:.1f} s)"
        )
    train_seconds = time.perf_counter() - start
    return TrainResult(
        model=model,
        config=config,
        history=history,
        test_accuracy=history[-1]["test_accuracy"],
        train_seconds=train_seconds,
        attention_in_box=attention_in_box(model, test_set) if config.attention_stats else None,
        attention_in_box_at_init=at_init,
        blas_threads=threads,
    )
