"""Compilation time of the reconstruction step, piece by piece: where does the compiler spend its time?

On an H200 the step's compilation went from 2.2 s (commit 3aa42dd) to 12.8 s (9107a02) while on the CPU
it went from 2.2 to 3.3 s (``experiments/results/gpu_compile_h200.md``). This script lowers and compiles
each piece of the step on its own (the forward model, the objective with its gradient, the
preconditioner's curvature and the position curvature, the optimizer update) and the
whole step, and prints the seconds of lowering and of compilation for each, on the default device.

    python experiments/bench_compile.py                       # 6 x 50 x 64^2 (bench_gpu.py --small's size)
    python experiments/bench_compile.py --energies 30 --positions 100 --frame 64
    XLA_FLAGS=--xla_gpu_autotune_level=0 python experiments/bench_compile.py   # without GPU autotuning
    PTYJAX_SYSTEM_MALLOC=0 python experiments/bench_compile.py   # ptyjax.hostmemory's settings forced on

On the CPU the increase came from ``ptyjax.hostmemory``'s one-arena malloc (bisected; see the update in
``gpu_compile_h200.md``), which is now applied on CPU runs only.

Nothing is cached between pieces: each is compiled from scratch (JAX's persistent cache is not used).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import synthetic_problem  # noqa: E402

from ptyjax import fit  # noqa: E402
from ptyjax.model import illumination  # noqa: E402
from ptyjax.propagation import intensity  # noqa: E402


def pieces(problem, config):
    """name -> (function of arrays only, its arguments)."""
    engine = fit.Engine.create(problem, config)
    indices, weights = fit.epoch_batches(problem.point_valid, config.batch_size, config.seed, 0)
    optimizer = fit.make_optimizer(config, indices.shape[0])
    params = fit.initial_params(problem, config)
    opt_state = optimizer.init(params)
    idx, point_weight = jnp.asarray(indices[0]), jnp.asarray(weights[0])
    frames = problem.batch_frames(indices[0])
    weight = problem.pixel_weight * point_weight[..., None, None]
    patches, waves = engine.predict(params, idx)
    grads = jax.grad(lambda p: engine.objective(p, frames, weight, idx)[0])(params)
    h_point = engine.position_curvature(params, frames, weight, patches, waves)
    curvature = engine.curvature(params, frames, weight, idx, patches, h_point)
    cache = jnp.ones(problem.point_valid.shape + (2,), jnp.float32)
    valid = jnp.asarray(problem.point_valid)
    one = jnp.float32(1.0)
    return {
        "forward model (patches, far field, intensity)": (lambda p: intensity(engine.predict(p, idx)[1]), (params,)),
        "objective value": (lambda p, s: engine.objective(p, frames, weight, idx, s)[0], (params, one)),
        "objective value and gradient": (jax.value_and_grad(lambda p, s: engine.objective(p, frames, weight, idx, s)[0]), (params, one)),
        "illumination (object curvature)": (lambda p: illumination(p, engine.geometry, idx, engine.context.object_shape), (params,)),
        "position curvature": (lambda p, pa, w: engine.position_curvature(p, frames, weight, pa, w), (params, patches, waves)),
        "curvature of object and probe": (lambda p, pa, h: engine.curvature(p, frames, weight, idx, pa, h), (params, patches, h_point)),
        "optimizer update": (lambda g, st, p, c: optimizer.update(g, st, p, curvature=c), (grads, opt_state, params, curvature)),
        "whole step": (
            lambda p, st, c, fr, i, w, m: fit._step(engine, optimizer, p, st, c, fr, problem.pixel_weight, valid, i, w, one, one, m),
            (params, opt_state, cache, frames, idx, point_weight, jnp.int32(fit.POSITIONS_FRESH))),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--energies", type=int, default=6)
    parser.add_argument("--positions", type=int, default=50)
    parser.add_argument("--frame", type=int, default=64)
    parser.add_argument("--sampling", default="exact", help="frame sampler: exact | native-grid")
    args = parser.parse_args(argv)
    jax.config.update("jax_compilation_cache_dir", None)
    problem, *_ = synthetic_problem(args.energies, args.positions, args.frame)
    config = fit.FitConfig(sampling=args.sampling)
    print(f"device {jax.devices()[0].device_kind}, JAX {jax.__version__}, {args.energies}x{args.positions}x{args.frame}^2, "
          f"{args.sampling}\n\n| piece | lowering (s) | compilation (s) |\n|---|---|---|")
    for name, (function, arguments) in pieces(problem, config).items():
        t0 = time.perf_counter()
        lowered = jax.jit(function).lower(*arguments)
        t1 = time.perf_counter()
        lowered.compile()
        print(f"| {name} | {t1 - t0:.2f} | {time.perf_counter() - t1:.2f} |", flush=True)


if __name__ == "__main__":
    main()
