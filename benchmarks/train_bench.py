"""The training step of the demo classifier: npcbam against its PyTorch twin, side by side.

Usage::

    python benchmarks/train_bench.py                          # one thread each (the default)
    NPCBAM_BENCH_THREADS=2 python benchmarks/train_bench.py   # two threads each
    python benchmarks/train_bench.py --json train.json        # ... and write every number
    python benchmarks/train_bench.py --quick                  # tiny batches: checks it runs

The model is the one ``npcbam train --task where`` trains (``npcbam.train.build_model`` with
the defaults of ``TrainConfig``), with ``--attention cbam`` and ``--attention none``. One step is
the training loop's: forward, softmax cross-entropy (mean over the batch), zero the gradients,
backward, Adam (lr 3e-3), on batches of 64 images in float32. The PyTorch twin is assembled from
the project's PyTorch references (``tests/parity/torch_networks.py``: the residual block with
CBAM of seed code 1; its CBAM replaced by the identity for ``none``), loaded with the npcbam
model's state dict, and steps with ``torch.optim.Adam`` (default path) on ``F.cross_entropy``.

Before any timing the two are checked to compute the same step, in the same run, from the same
weights and batch. In float64 (gated: the script exits with status 1 otherwise) the loss, every
parameter gradient, the BatchNorm running statistics and the parameters after the Adam step
from the same gradients agree to within 1e-10 (normwise relative error,
``max|npcbam - torch| / max|torch|``). In float32 the loss must agree to within 1e-5; the
gradients' float32 errors are printed and stored, not gated: on the benchmark's batches a ReLU
input or a maximum within float32 rounding of its switch point flips with the order of a sum,
and then a gradient that nearly cancels (a BatchNorm bias) differs by up to 1e-2 between two
correct float32 computations (npcbam's own with one and with two BLAS threads).

Method (as ``bench.py``): the same thread count for NumPy's BLAS and PyTorch, fixed before
either starts its thread pool (1 unless NPCBAM_BENCH_THREADS says otherwise; one process per
thread count); a warm-up step, then ``--repeats`` timed steps per side, npcbam and PyTorch
interleaved, cycling through the same batches; medians; ratio = npcbam / PyTorch (below 1:
npcbam is faster). Each step is also split into three phases timed inside it (forward and
loss; zero the gradients and backward; the optimizer step), reported as medians. PyTorch is
optional: without it, its columns say ``n/a`` and the check is skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

# first: bench.py fixes the thread count of both sides (NPCBAM_BENCH_THREADS, default 1)
# before NumPy, or PyTorch, starts its thread pool
import bench  # noqa: F401
import numpy as np
from bench import REPO, THREADS, fmt, interleaved_medians, machine, ratio, torch

from npcbam._blas import blas_threads
from npcbam.data import load_task
from npcbam.ops.loss import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from npcbam.optim import Adam
from npcbam.train import TrainConfig, build_model

ATTENTIONS = ("cbam", "none")
PHASES = ("forward", "backward", "optimizer")  # forward + loss; zero_grad + backward; step
FLOAT64_TOLERANCE = 1e-10  # float64 rounding through the network (as the live parity tests)
FLOAT32_TOLERANCE = 1e-5
BATCHES = 4  # distinct batches the timed steps cycle through
QUICK_BATCH_SIZE = 8


# -- the two training steps --------------------------------------------------------------------
def npcbam_step(model, optimizer, images, labels, phases=None, on_gradients=None) -> float:
    """One step of ``npcbam.train``'s loop; returns the loss. Appends the phases' seconds to
    ``phases``; calls ``on_gradients()`` between the backward and the optimizer step."""
    start = time.perf_counter()
    logits = model.forward(images)  # (B, K)
    loss, loss_cache = softmax_cross_entropy_forward(logits, labels)
    forward_done = time.perf_counter()
    model.zero_grad()
    model.backward(softmax_cross_entropy_backward(1.0, loss_cache))
    backward_done = time.perf_counter()
    if on_gradients is not None:
        on_gradients()
    optimizer.step()
    if phases is not None:
        end = time.perf_counter()
        phases.append((forward_done - start, backward_done - forward_done, end - backward_done))
    return loss


def torch_step(model, optimizer, images, labels, phases=None, on_gradients=None) -> float:
    """The same step in PyTorch eager (arguments as :func:`npcbam_step`)."""
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    forward_done = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    backward_done = time.perf_counter()
    if on_gradients is not None:
        on_gradients()
    optimizer.step()
    if phases is not None:
        end = time.perf_counter()
        phases.append((forward_done - start, backward_done - forward_done, end - backward_done))
    return loss.item()


# -- the PyTorch twin --------------------------------------------------------------------------
def numpy_dtype(torch_dtype) -> type:
    return {torch.float32: np.float32, torch.float64: np.float64}[torch_dtype]


def cbam_settings(block) -> tuple[int, int]:
    """(reduction, kernel_size) of a block's CBAM, read from its weights' shapes; any pair for
    a block without attention (the twin replaces its CBAM by the identity)."""
    if block.attention is None:
        return 1, 7
    weights = block.attention.state_dict()
    hidden, channels = weights["mlp.0.weight"].shape[:2]  # (C // r, C, 1, 1)
    return channels // hidden, weights["conv.weight"].shape[-1]  # (1, 2, k, k)


def torch_twin(model, torch_dtype):
    """The PyTorch twin of an npcbam ``AttentionClassifier`` (attention "cbam" or "none") in
    ``torch_dtype``, holding ``model``'s state (parameters and BatchNorm buffers), in train mode.

    Built from the project's references: a stem (3×3 convolution without bias, BatchNorm,
    ReLU), one ``TorchResidualBlockCBAM`` per block, global average pooling and a linear head.
    Its state-dict keys are npcbam's and loading is strict: every weight is the npcbam model's.
    """
    sys.path.insert(0, str(REPO / "tests"))
    from parity.torch_networks import TorchResidualBlockCBAM

    nn = torch.nn
    if model.attention not in ATTENTIONS:
        raise ValueError(f"attention={model.attention!r}; the twin exists for {ATTENTIONS}")
    stem_width = model.blocks.layers[0].in_channels
    blocks, previous = [], stem_width
    for block in model.blocks.layers:
        twin_block = TorchResidualBlockCBAM(
            previous, block.out_channels, block.stride, *cbam_settings(block)
        )
        if model.attention == "none":
            twin_block.cbam = nn.Identity()  # no parameters: no keys in the state dict
        blocks.append(twin_block)
        previous = block.out_channels
    twin = nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(
                nn.Conv2d(model.in_channels, stem_width, 3, padding=1, bias=False),
                nn.BatchNorm2d(stem_width),
                nn.ReLU(),
            ),
            blocks=nn.Sequential(*blocks),
            pool=nn.AdaptiveAvgPool2d(1),  # (N, C, 1, 1)
            flatten=nn.Flatten(),  # (N, C)
            head=nn.Linear(previous, model.num_classes),
        )
    ).to(torch_dtype)
    state = {
        key: torch.from_numpy(
            value.astype(numpy_dtype(torch_dtype)) if value.dtype.kind == "f" else value
        )
        for key, value in model.state_dict().items()
    }
    twin.load_state_dict(state, strict=True)
    return twin.train()


# -- the equivalence check -------------------------------------------------------------------
def relative_error(actual, expected) -> float:
    """``max|actual - expected| / max|expected|``, in float64 (the difference when both are 0)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale, diff = np.abs(expected).max(), np.abs(actual - expected).max()
    return float(diff / scale) if scale > 0 else float(diff)


def step_errors(config: TrainConfig, train_set, images, labels, torch_dtype) -> dict[str, float]:
    """One step from the same weights and batch on both sides, in ``torch_dtype``.

    Returns the error (:func:`relative_error`) of the ``loss``, of every ``grad/<name>``, of the
    BatchNorm running statistics ``after/<name>`` and, in float64 only, of the parameters
    after the optimizer step from the same gradients, ``param/<name>``.
    """
    model = build_model(config, train_set)
    twin = torch_twin(model, torch_dtype)
    images = images.astype(numpy_dtype(torch_dtype))
    grads, twin_grads = {}, {}
    loss = npcbam_step(
        model,
        Adam(model, lr=config.lr),
        images,
        labels,
        on_gradients=lambda: grads.update({k: v.copy() for k, v in model.grads.items()}),
    )
    twin_loss = torch_step(
        twin,
        torch.optim.Adam(twin.parameters(), lr=config.lr),
        torch.from_numpy(images),
        torch.from_numpy(labels),
        on_gradients=lambda: same_gradients(twin, grads, twin_grads, torch_dtype),
    )
    errors = {"loss": relative_error(loss, twin_loss)}
    errors.update({f"grad/{k}": relative_error(grads[k], twin_grads[k]) for k in twin_grads})
    twin_state = twin.state_dict()
    for key, value in model.state_dict().items():
        if key in grads and torch_dtype == torch.float64:
            errors[f"param/{key}"] = relative_error(value, twin_state[key].numpy())
        elif key not in grads and value.dtype.kind == "f":  # BatchNorm running statistics
            errors[f"after/{key}"] = relative_error(value, twin_state[key].numpy())
    return errors


def same_gradients(twin, grads, twin_grads, torch_dtype) -> None:
    """Keep a copy of the twin's gradients in ``twin_grads``; in float64, then give its
    optimizer npcbam's gradients, so that the parameters after the step compare Adam alone
    (a rounding-level gradient difference at an entry of size near Adam's eps moves that
    entry's update by far more than rounding)."""
    for key, param in twin.named_parameters():
        twin_grads[key] = param.grad.numpy().copy()
        if torch_dtype == torch.float64:
            param.grad.copy_(torch.from_numpy(grads[key]))


def check_equivalence(config, train_set, images, labels) -> dict:
    """The worst error of each dtype's check step, its key, the tolerance and the verdict."""
    result = {}
    for torch_dtype, tolerance in (
        (torch.float64, FLOAT64_TOLERANCE),
        (torch.float32, FLOAT32_TOLERANCE),
    ):
        errors = step_errors(config, train_set, images, labels, torch_dtype)
        worst = max(errors, key=errors.get)
        # float32 gradients are reported, not gated: see the module docstring
        gated = errors if torch_dtype == torch.float64 else {"loss": errors["loss"]}
        result[str(torch_dtype).removeprefix("torch.")] = {
            "compared": len(errors),
            "worst": worst,
            "worst_error": errors[worst],
            "within_tolerance": sum(error <= tolerance for error in errors.values()),
            "loss_error": errors["loss"],
            "tolerance": tolerance,
            "gated": sorted(gated),
            "equal": max(gated.values()) <= tolerance,
        }
    return result


# -- timing ------------------------------------------------------------------------------------
def phase_medians(phases: list[tuple[float, float, float]]) -> dict[str, float]:
    """Median milliseconds of each phase, the warm-up step left out."""
    timed_steps = phases[1:]
    return {
        name: 1e3 * statistics.median(p[i] for p in timed_steps) for i, name in enumerate(PHASES)
    }


def bench_attention(attention: str, batch_size: int, n_batches: int, repeats: int) -> dict:
    config = TrainConfig(attention=attention, batch_size=batch_size)
    train_set, _ = load_task(config.task, batch_size * n_batches, 1, seed=config.seed)
    batches = list(train_set.batches(batch_size, np.random.default_rng([config.seed, 2])))
    row = {"attention": attention, "batch_size": batch_size, "threads": int(THREADS)}

    model = build_model(config, train_set)
    optimizer = Adam(model, lr=config.lr)
    np_batches, np_phases = itertools.cycle(batches), []

    def np_timed():
        npcbam_step(model, optimizer, *next(np_batches), np_phases)

    torch_timed = None
    if torch is not None:
        row["check"] = check_equivalence(config, train_set, *batches[0])
        twin = torch_twin(model, torch.float32)  # the same initial weights as ``model``
        twin_optimizer = torch.optim.Adam(twin.parameters(), lr=config.lr)
        twin_batches = itertools.cycle(
            [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
        )
        torch_phases = []

        def torch_timed():
            torch_step(twin, twin_optimizer, *next(twin_batches), torch_phases)

    t_np, t_torch = interleaved_medians([np_timed, torch_timed], repeats)
    row["npcbam_step_ms"] = 1e3 * t_np
    row["torch_step_ms"] = None if t_torch is None else 1e3 * t_torch
    row["step_ratio"] = ratio(t_np, t_torch)
    row["npcbam_phases_ms"] = phase_medians(np_phases)
    row["torch_phases_ms"] = None if torch is None else phase_medians(torch_phases)
    return row


def print_row(row: dict) -> None:
    np_phases = row["npcbam_phases_ms"]
    torch_phases = row["torch_phases_ms"] or {}
    phases = "  ".join(
        f"{fmt(np_phases[name], '>6.1f')} /{fmt(torch_phases.get(name), '>6.1f')}"
        for name in PHASES
    )
    print(
        f"{row['attention']:<10} {row['threads']:>7} {row['npcbam_step_ms']:>9.2f} "
        f"{fmt(row['torch_step_ms'], '>9.2f')} {fmt(row['step_ratio'], '>6.2f')}   {phases}",
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per side")
    parser.add_argument("--quick", action="store_true", help="tiny batches, to check it runs")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args(argv)
    if torch is not None:
        torch.set_num_threads(int(THREADS))
    batch_size = QUICK_BATCH_SIZE if args.quick else TrainConfig().batch_size
    repeats = 3 if args.quick else args.repeats
    results = {"machine": machine(), "repeats": repeats, "steps": []}
    results["machine"]["numpy_blas_threads"] = blas_threads()  # in effect, asked of OpenBLAS
    print(f"machine: {json.dumps(results['machine'])}", flush=True)
    if torch is None:
        print("PyTorch is not installed: its columns say n/a (pip install torch==2.13.0)")

    print(
        f"\nTraining step of the demo classifier ('where' task), batch {batch_size}, float32 "
        "(ratio = npcbam / PyTorch eager);\nphases: forward+loss, zero_grad+backward, "
        "optimizer step, in ms (npcbam / PyTorch)"
    )
    print(
        f"{'attention':<10} {'threads':>7} {'npcbam ms':>9} {'torch ms':>9} {'ratio':>6}   "
        f"{'forward':>14}  {'backward':>14}  {'optimizer':>14}"
    )
    equal = True
    for attention in ATTENTIONS:
        row = bench_attention(attention, batch_size, BATCHES, repeats)
        results["steps"].append(row)
        print_row(row)
        for dtype, check in row.get("check", {}).items():
            equal &= check["equal"]
            print(
                f"{'':<10} check {dtype}: {check['within_tolerance']}/{check['compared']} "
                f"quantities within {check['tolerance']:g}, worst "
                f"{check['worst']} {check['worst_error']:.2e} (loss {check['loss_error']:.2e}); "
                f"gated ({len(check['gated'])}): {'equal' if check['equal'] else 'DIFFERENT'}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    if not equal:
        print("the PyTorch twin does not compute the same step: the times are not comparable")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
