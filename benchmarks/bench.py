"""npcbam against PyTorch eager on the CPU, side by side in one process.

Usage::

    python benchmarks/bench.py                       # full run, prints the tables
    python benchmarks/bench.py --json results.json   # ... and writes every number as JSON
    python benchmarks/bench.py --quick               # tiny shapes: checks the script runs

Method: float32 throughout; the same thread count for NumPy's BLAS and PyTorch (1 unless
NPCBAM_BENCH_THREADS says otherwise); a warm-up, then
``--repeats`` timed runs per case, npcbam and PyTorch *interleaved* (so that a noisy neighbour
slows both alike); medians reported, and ratios npcbam / PyTorch (below 1: npcbam is faster).
"Passes" divide a time by that of one streaming pass over the input
(``np.multiply(x, 1, out=buf)``): the distance to a memory-bound floor. Peak extra memory is
measured with tracemalloc (NumPy reports its buffers to it) over a forward and backward of a
fresh module, the cache kept for backward included, in multiples of the input's bytes.
PyTorch is optional: without it, its columns say so and the rest runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

# One thread count for both sides, fixed before NumPy's BLAS starts its thread pool. One thread
# by default: idle OpenBLAS threads spin for a while after each call and steal the cores from
# whatever runs next, which made interleaved two-thread timings of PyTorch erratic here.
THREADS = os.environ.get("NPCBAM_BENCH_THREADS", "1")
os.environ["OPENBLAS_NUM_THREADS"] = THREADS
os.environ["OMP_NUM_THREADS"] = THREADS
os.environ["MKL_NUM_THREADS"] = THREADS

import numpy as np  # noqa: E402 (after the thread settings)

import npcbam  # noqa: E402
from npcbam.ops import conv2d_backward, conv2d_forward, reference  # noqa: E402
from npcbam.ops import pooling as pool_ops  # noqa: E402

try:
    import torch
except ImportError:  # the PyTorch columns then say "n/a"
    torch = None

REPO = Path(__file__).resolve().parents[1]
CBAM_SHAPES = [(8, 64, 56, 56), (32, 256, 14, 14), (32, 64, 32, 32), (64, 512, 7, 7)]
# (input shape, output channels, stride) of 3x3 convolutions as in a ResNet's stages
CONV_CASES = [
    ((8, 64, 56, 56), 64, 1),
    ((8, 64, 56, 56), 128, 2),
    ((16, 128, 28, 28), 128, 1),
    ((16, 128, 28, 28), 256, 2),
]
QUICK_CBAM_SHAPES = [(2, 16, 8, 8)]
QUICK_CONV_CASES = [((2, 8, 8, 8), 8, 1)]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(fns: list[Callable[[], object] | None], repeats: int) -> list[float]:
    """Median seconds of each function, run in turns after one warm-up call each; None stays
    None (a side that is not available)."""
    live = [fn for fn in fns if fn is not None]
    for fn in live:
        fn()
    samples: dict[int, list[float]] = {id(fn): [] for fn in live}
    for _ in range(repeats):
        for fn in live:
            samples[id(fn)].append(timed(fn))
    return [None if fn is None else statistics.median(samples[id(fn)]) for fn in fns]


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def peak_extra_memory(fn: Callable[[], object]) -> int:
    """Peak bytes allocated (and traced) while ``fn`` runs, above what existed before."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def torch_cbam(module: npcbam.CBAM):
    """The project's PyTorch reference of seed code 1, with ``module``'s weights (float32)."""
    sys.path.insert(0, str(REPO / "tests"))
    from parity.torch_reference import TorchCBAM

    reference_module = TorchCBAM(module.channels, module.reduction, module.kernel_size)
    reference_module.load_state_dict(
        {k: torch.from_numpy(v.astype(np.float32)) for k, v in module.state_dict().items()}
    )
    return reference_module


def bench_cbam(shape, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    c = shape[1]
    module = npcbam.CBAM(c, reduction=16 if c >= 16 else 1, kernel_size=7, seed=0)
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    buffer = np.empty_like(x)

    def np_forward():
        module.forward(x)

    def np_step():
        module.forward(x)
        module.backward(dy)

    def one_pass():
        np.multiply(x, 1, out=buffer)

    torch_forward = torch_step = None
    if torch is not None:
        reference_module = torch_cbam(module)
        x_t, dy_t = torch.from_numpy(x), torch.from_numpy(dy)

        def torch_forward():
            with torch.no_grad():
                reference_module(x_t)

        def torch_step():
            x_leaf = x_t.detach().requires_grad_()
            reference_module.zero_grad(set_to_none=True)
            reference_module(x_leaf).backward(dy_t)

    t_fwd, t_torch_fwd, t_step, t_torch_step, t_pass = interleaved_medians(
        [np_forward, torch_forward, np_step, torch_step, one_pass], repeats
    )
    fresh = npcbam.CBAM(c, reduction=module.reduction, kernel_size=7, seed=0)
    memory = peak_extra_memory(lambda: (fresh.forward(x), fresh.backward(dy)))
    return {
        "shape": list(shape),
        "npcbam_forward_ms": 1e3 * t_fwd,
        "torch_forward_ms": None if t_torch_fwd is None else 1e3 * t_torch_fwd,
        "forward_ratio": ratio(t_fwd, t_torch_fwd),
        "npcbam_step_ms": 1e3 * t_step,
        "torch_step_ms": None if t_torch_step is None else 1e3 * t_torch_step,
        "step_ratio": ratio(t_step, t_torch_step),
        "one_pass_ms": 1e3 * t_pass,
        "step_passes": t_step / t_pass,
        "peak_extra_memory_x_input": memory / x.nbytes,
    }


def bench_conv(shape, out_channels: int, stride: int, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape, dtype=np.float32)
    weight = rng.standard_normal((out_channels, shape[1], 3, 3), dtype=np.float32) * 0.05
    out, _ = conv2d_forward(x, weight, stride=stride, padding=1)
    dout = rng.standard_normal(out.shape, dtype=np.float32)

    def np_step():
        _, cache = conv2d_forward(x, weight, stride=stride, padding=1)
        conv2d_backward(dout, cache)

    torch_step = None
    if torch is not None:
        x_t, w_t, dout_t = (torch.from_numpy(a) for a in (x, weight, dout))

        def torch_step():
            x_leaf = x_t.detach().requires_grad_()
            w_leaf = w_t.detach().requires_grad_()
            out_t = torch.nn.functional.conv2d(x_leaf, w_leaf, stride=stride, padding=1)
            out_t.backward(dout_t)

    t_np, t_torch = interleaved_medians([np_step, torch_step], repeats)
    return {
        "shape": list(shape),
        "out_channels": out_channels,
        "stride": stride,
        "npcbam_step_ms": 1e3 * t_np,
        "torch_step_ms": None if t_torch is None else 1e3 * t_torch,
        "step_ratio": ratio(t_np, t_torch),
    }


def teaching_cases():
    """(name, naive forward+backward, vectorized forward+backward) at small float64 shapes."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 8, 12, 12))
    d_pool = rng.standard_normal((2, 8))
    weight = rng.standard_normal((4, 8, 3, 3))
    d_conv = rng.standard_normal((2, 4, 12, 12))

    def naive_max_pool():
        reference.global_max_pool_naive(x)
        reference.global_max_pool_backward_naive(d_pool, x)

    def vector_max_pool():
        _, cache = pool_ops.global_max_pool_forward(x)
        pool_ops.global_max_pool_backward(d_pool, cache)

    def naive_conv():
        reference.conv2d_naive(x, weight, padding=(1, 1))
        reference.conv2d_backward_naive(d_conv, x, weight, padding=(1, 1))

    def vector_conv():
        _, cache = conv2d_forward(x, weight, padding=1)
        conv2d_backward(d_conv, cache)

    def naive_sigmoid():
        reference.sigmoid_backward_naive(x, x)

    def vector_sigmoid():
        _, cache = npcbam.ops.sigmoid_forward(x)
        npcbam.ops.sigmoid_backward(x, cache)

    yield "global max pool (2, 8, 12, 12)", naive_max_pool, vector_max_pool
    yield "sigmoid (2, 8, 12, 12)", naive_sigmoid, vector_sigmoid
    yield "conv2d 3x3, 8 -> 4 channels, (2, 8, 12, 12)", naive_conv, vector_conv


def bench_teaching(repeats: int) -> list[dict]:
    rows = []
    for name, naive, vectorized in teaching_cases():
        t_naive, t_vector = interleaved_medians([naive, vectorized], max(3, repeats // 3))
        rows.append(
            {
                "case": name,
                "naive_ms": 1e3 * t_naive,
                "vectorized_ms": 1e3 * t_vector,
                "speedup": t_naive / t_vector,
            }
        )
    return rows


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "threads": int(THREADS),
        "torch_threads": None if torch is None else torch.get_num_threads(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["numpy_blas"] = [
            {k: pool.get(k) for k in ("internal_api", "num_threads", "version", "architecture")}
            for pool in threadpool_info()
            if pool.get("user_api") == "blas"
        ]
    except ImportError:
        info["numpy_blas"] = f"threadpoolctl not installed; OPENBLAS_NUM_THREADS={THREADS}"
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per case")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, to check it runs")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    args = parser.parse_args(argv)
    if torch is not None:
        torch.set_num_threads(int(THREADS))
    cbam_shapes = QUICK_CBAM_SHAPES if args.quick else CBAM_SHAPES
    conv_cases = QUICK_CONV_CASES if args.quick else CONV_CASES
    repeats = 3 if args.quick else args.repeats
    results = {"machine": machine(), "repeats": repeats, "cbam": [], "conv2d": []}
    print(f"machine: {json.dumps(results['machine'])}", flush=True)
    if torch is None:
        print("PyTorch is not installed: its columns say n/a (pip install torch==2.13.0)")

    print("\nCBAM forward and forward+backward, float32 (ratio = npcbam / PyTorch eager)")
    print(
        f"{'shape (N, C, H, W)':<20} {'fwd ms':>8} {'torch':>8} {'ratio':>6} "
        f"{'step ms':>8} {'torch':>8} {'ratio':>6} {'passes':>7} {'memory':>7}"
    )
    for shape in cbam_shapes:
        row = bench_cbam(shape, repeats)
        results["cbam"].append(row)
        print(
            f"{tuple(shape)!s:<20} {row['npcbam_forward_ms']:>8.2f} "
            f"{fmt(row['torch_forward_ms'], '>8.2f')} {fmt(row['forward_ratio'], '>6.2f')} "
            f"{row['npcbam_step_ms']:>8.2f} {fmt(row['torch_step_ms'], '>8.2f')} "
            f"{fmt(row['step_ratio'], '>6.2f')} {row['step_passes']:>7.1f} "
            f"{row['peak_extra_memory_x_input']:>6.2f}x",
            flush=True,
        )
    step_ratios = [row["step_ratio"] for row in results["cbam"] if row["step_ratio"]]
    if step_ratios:
        geomean = math.exp(statistics.fmean(math.log(r) for r in step_ratios))
        results["cbam_step_ratio_geomean"] = geomean
        print(f"geometric mean of forward+backward ratios: {geomean:.2f}")

    print("\nconv2d 3x3, padding 1, forward+backward, float32")
    print(f"{'input (N, C, H, W)':<20} {'F':>4} {'s':>2} {'ms':>8} {'torch':>8} {'ratio':>6}")
    for shape, out_channels, stride in conv_cases:
        row = bench_conv(shape, out_channels, stride, repeats)
        results["conv2d"].append(row)
        print(
            f"{tuple(shape)!s:<20} {out_channels:>4} {stride:>2} {row['npcbam_step_ms']:>8.2f} "
            f"{fmt(row['torch_step_ms'], '>8.2f')} {fmt(row['step_ratio'], '>6.2f')}",
            flush=True,
        )

    print("\nWhat vectorization buys: loop oracle vs vectorized op, forward+backward, float64")
    results["teaching"] = bench_teaching(repeats)
    for row in results["teaching"]:
        print(
            f"{row['case']:<44} naive {row['naive_ms']:>9.2f} ms   vectorized "
            f"{row['vectorized_ms']:>7.3f} ms   {row['speedup']:>8.0f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
