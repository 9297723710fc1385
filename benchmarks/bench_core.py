"""Throughput of the mlp_core training kernels against this machine's own matmul ceiling, measured in one run.

    python benchmarks/bench_core.py [--repeats 3]

Workloads (SPEC shapes, synthetic MNIST-shaped data so the benchmark needs no download):
  W1  784-64-10 sigmoid, batch 32, momentum 0.9, one epoch over 20,000 samples (625 steps, shuffled batch gathers included)
  W2  ten hidden layers of 64 (improved sigmoid), otherwise as W1
  W3  W1 at batch 256
  W4  a forward pass (evaluate: loss + accuracy) over 10,000 samples with the W1 network, and the same pass jitted
      in JAX when it is installed (extra `bench`), measured interleaved (--w4-repeats calls each, best and median);
      prints NumPy speed / JAX speed, and the same for the first-layer GEMM alone (np.matmul, i.e. OpenBLAS,
      against XLA's): the GEMM is most of the pass, so its ratio bounds what the rest of the pass can win
The ceiling is a 2048^3 float32 matmul measured in the same run. FLOPs count 2*m*n*k for each forward, grad-weight and
grad-input product actually performed (the first layer has no grad-input product).
Prints steps/s (W4: samples/s), achieved GFLOP/s and the fraction of the ceiling; the best of --repeats runs is kept.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mlp_core.losses import FusedSoftmaxCE
from mlp_core.model import MLP, ModelConfig
from mlp_core.optim import SGD


def matmul_ceiling(repeats: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.random((2048, 2048), dtype=np.float32)
    b = rng.random((2048, 2048), dtype=np.float32)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    best = float("inf")
    for _ in range(max(3, repeats)):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * 2048**3 / best


def step_flops(sizes: list[int], batch: int) -> int:
    pairs = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * batch * a * b for a, b in pairs)
    grad_w = forward
    grad_in = sum(2 * batch * a * b for a, b in pairs[1:])
    return forward + grad_w + grad_in


def train_epoch_rate(config: ModelConfig, batch: int, x, y, repeats: int) -> tuple[float, int]:
    """Steps/s of the exact kernels `fit` runs (shuffle, forward, fused loss, backward, momentum update)."""
    n, d = x.shape
    net = MLP(d, config, 10, rng=np.random.default_rng(0))
    opt = SGD(0.02, 0.9)
    opt.init(net.params)
    loss_fn = FusedSoftmaxCE(batch, 10)
    onehot = np.zeros((n, 10), dtype=np.float32)
    onehot[np.arange(n), y] = 1.0
    xb, ob = np.empty((batch, d), np.float32), np.empty((batch, 10), np.float32)
    ws = net._workspace(batch)
    rng = np.random.default_rng(1)
    steps = n // batch
    best = float("inf")
    for _ in range(repeats + 1):  # the first epoch warms up caches and BLAS threads
        t = time.perf_counter()
        order = rng.permutation(n)
        for i in range(steps):
            rows = order[i * batch : (i + 1) * batch]
            np.take(x, rows, axis=0, out=xb)
            np.take(onehot, rows, axis=0, out=ob)
            logits = net._forward(xb, ws)
            loss_fn(logits, ob)
            net._backward(xb, ws, logits)
            opt.step(net.params, net.grads)
        best = min(best, time.perf_counter() - t)
    return steps / best, steps


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--w4-repeats", type=int, default=30, help="interleaved W4 calls per side")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=20_000)
    ceiling = matmul_ceiling(args.repeats)
    print(f"ceiling: 2048^3 float32 matmul = {ceiling / 1e9:.1f} GFLOP/s")
    print(f"{'workload':<44} {'rate':>14} {'GFLOP/s':>9} {'of ceiling':>11}")

    w1 = ModelConfig((64,), activation="sigmoid")
    w2 = ModelConfig((64,) * 10, activation="improved_sigmoid", init="fan_in")
    rows = [
        ("W1 784-64-10 sigmoid, batch 32, momentum", w1, 32),
        ("W2 784-(64x10)-10, batch 32, momentum", w2, 32),
        ("W3 784-64-10 sigmoid, batch 256, momentum", w1, 256),
    ]
    for label, cfg, batch in rows:
        rate, _ = train_epoch_rate(cfg, batch, x, y, args.repeats)
        sizes = [784, *cfg.hidden_sizes, 10]
        gflops = rate * step_flops(sizes, batch)
        print(f"{label:<44} {rate:>10.0f} st/s {gflops / 1e9:>9.1f} {gflops / ceiling:>10.1%}")

    net = MLP(784, w1, 10, rng=0)
    xv, yv = x[:10_000], y[:10_000]
    flops = 2 * 10_000 * (784 * 64 + 64 * 10)
    sides = {"numpy": lambda: net.evaluate(xv, yv)}
    jax_sides = jax_evaluate(net, xv, yv)
    if jax_sides is not None:
        sides["jax"] = jax_sides[0]
        w0 = np.ascontiguousarray(net.weights[0][:-1])
        gemm_out = np.empty((10_000, 64), dtype=np.float32)
        sides["numpy gemm"] = lambda: np.matmul(xv, w0, out=gemm_out)
        sides["jax gemm"] = jax_sides[1]
    times = interleaved(sides, max(args.w4_repeats, 5))
    print(f"{'W4 forward+loss over 10,000 samples':<44} {rate_line(10_000, flops, times['numpy'], ceiling)}")
    if jax_sides is None:
        print("W4 against JAX: skipped (pip install -e '.[bench]' installs jax)")
        return
    print(f"{'W4 the same with a jitted JAX forward':<44} {rate_line(10_000, flops, times['jax'], ceiling)}")
    gemm_flops = 2 * 10_000 * 784 * 64
    print(f"{'  its first-layer GEMM alone, NumPy':<44} {rate_line(10_000, gemm_flops, times['numpy gemm'], ceiling)}")
    print(f"{'  its first-layer GEMM alone, JAX':<44} {rate_line(10_000, gemm_flops, times['jax gemm'], ceiling)}")
    print(f"W4 NumPy speed / JAX speed ({len(times['jax'])} calls): {speed_ratios(times['jax'], times['numpy'])} "
          f"(target >= 1.0); the GEMM alone: {speed_ratios(times['jax gemm'], times['numpy gemm'])}")


def speed_ratios(reference: list, measured: list) -> str:
    """The ``measured`` side's speed over the ``reference`` side's (their times' ratio, reference / measured), by best
    time and by median time."""
    return (f"{min(reference) / min(measured):.2f} best, "
            f"{float(np.median(reference)) / float(np.median(measured)):.2f} median")


def interleaved(sides: dict, repeats: int) -> dict:
    """Seconds of each call, the sides taking turns (so that all see the same load); one warm-up call each."""
    times = {name: [] for name in sides}
    for run in sides.values():
        run()
    for _ in range(repeats):
        for name, run in sides.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    return times


def rate_line(samples: int, flops: int, times: list, ceiling: float) -> str:
    """Samples/s, GFLOP/s and fraction of the ceiling of the best time, then the median's samples/s."""
    best, median = min(times), float(np.median(times))
    return (f"{samples / best:>8.0f} smp/s {flops / best / 1e9:>9.1f} {flops / best / ceiling:>10.1%}   "
            f"median {samples / median:>8.0f} smp/s")


def jax_evaluate(net: MLP, x: np.ndarray, y: np.ndarray):
    """(a jitted JAX forward pass (mean cross-entropy and accuracy) of `net` over (x, y), the jitted first-layer GEMM
    alone), each a function that runs once and waits for its result; None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    w0, w1 = (jnp.asarray(w) for w in net.weights)
    w0_core = jnp.asarray(np.ascontiguousarray(net.weights[0][:-1]))
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    @jax.jit
    def forward(x, y):
        hidden = jax.nn.sigmoid(x @ w0[:-1] + w0[-1])
        logits = hidden @ w1
        loss = jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0])
        return loss, jnp.mean(jnp.argmax(logits, axis=1) == y)

    gemm = jax.jit(lambda x, w: x @ w)

    def run():
        return jax.block_until_ready(forward(xj, yj))

    def run_gemm():
        return jax.block_until_ready(gemm(xj, w0_core))

    loss, accuracy = run()
    expected = net.evaluate(x, y)
    assert abs(float(loss) - expected[0]) < 1e-4 * abs(expected[0]) and abs(float(accuracy) - expected[1]) < 1e-6
    return run, run_gemm


if __name__ == "__main__":
    main()
