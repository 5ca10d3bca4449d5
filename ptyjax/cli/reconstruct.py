"""``ptyjax reconstruct``: joint multi-energy reconstruction of CXI files."""

from __future__ import annotations

from pathlib import Path

from .. import recipes
from ..data import Dataset
from ..fit import reconstruct, save_reconstruction


def add_parser(subparsers):
    p = subparsers.add_parser("reconstruct", help="reconstruct all energies jointly on one object grid")
    p.add_argument("paths", nargs="+", help="CXI files or folders of them (one file per energy)")
    p.add_argument("-o", "--output", required=True, help="results file (HDF5) to write /reconstruction to")
    p.add_argument("--model", default=recipes.DEFAULT_MODEL, help="model recipe (see `ptyjax models`)")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--batch", type=int, dest="batch_size", help="scan points per energy in one step")
    p.add_argument("--modes", type=int, dest="n_modes", help="incoherent probe modes")
    p.add_argument("--loss", choices=["amplitude", "poisson"], help="noise model")
    p.add_argument("--defocus", type=float, dest="defocus_m", help="starting probe defocus in m (default: estimated)")
    p.add_argument("--no-positions", action="store_true", help="do not refine scan positions")
    p.add_argument("--seed", type=int, help="random seed of the minibatch order")
    p.add_argument("--checkpoint", help="checkpoint file (default: OUTPUT.ckpt)")
    p.add_argument("--checkpoint-every", type=int, dest="checkpoint_every", help="epochs between checkpoints (default 5)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "n_modes", "loss", "defocus_m", "seed", "checkpoint_every")}
    if args.no_positions:
        overrides["refine_positions"] = False
    config = recipes.fit_config(args.model, **overrides)
    dataset = Dataset.open(args.paths)
    checkpoint = args.checkpoint or str(Path(args.output)) + ".ckpt"
    result = reconstruct(dataset, config, checkpoint=checkpoint, resume=args.resume, progress=not args.quiet)
    save_reconstruction(args.output, result, extra_config={"model": args.model, "inputs": [str(f) for f in dataset.files]})
    print(f"reconstructed {len(dataset)} energies on a {result.problem.grid.shape[0]}x{result.problem.grid.shape[1]} grid "
          f"of {result.problem.grid.pixel_size * 1e9:.2f} nm; final loss {result.loss_history[-1]:.4g} -> {args.output}")
    return 0
