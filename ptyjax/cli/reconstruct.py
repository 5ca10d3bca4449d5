"""``ptyjax reconstruct``: joint multi-energy reconstruction of CXI files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import plugins, priors, recipes
from ..errors import PtyjaxError
from ..data import Dataset
from ..fit import reconstruct, save_reconstruction


def add_parser(subparsers):
    p = subparsers.add_parser("reconstruct", help="reconstruct all energies jointly on one object grid")
    p.add_argument("paths", nargs="+", help="CXI files or folders of them (one file per energy)")
    p.add_argument("-o", "--output", required=True, help="results file (HDF5) to write /reconstruction to")
    p.add_argument("--model", default=recipes.DEFAULT_MODEL, help="model recipe (see `ptyjax models`)")
    p.add_argument("--epochs", type=int, help="most epochs (default 150; the run stops earlier once converged)")
    p.add_argument("--converged-fall", type=float, dest="converged_fall",
                   help="stop once the objective falls by less than this fraction per epoch over the last 10 epochs "
                        "(default 5e-4; 0 runs every epoch)")
    p.add_argument("--batch", type=int, dest="batch_size", help="largest number of scan points per energy in one step (the points are spread evenly over ceil(P / B) steps)")
    p.add_argument("--modes", type=int, dest="n_modes", help="incoherent probe modes")
    p.add_argument("--loss", choices=["amplitude", "poisson"], help="noise model")
    p.add_argument("--defocus", type=float, dest="defocus_m", help="starting probe defocus in m (default: estimated)")
    p.add_argument("--no-positions", action="store_true", help="do not refine scan positions")
    p.add_argument("--sampling", choices=["auto", "exact", "native-grid"],
                   help="how frames see the object: per-frame matrices (exact), one resampling per step (native-grid: "
                        "faster, slightly less accurate when pixel sizes differ), or auto (default: native-grid only "
                        "when every energy has the same pixel)")
    p.add_argument("--seed", type=int, help="random seed of the minibatch order")
    p.add_argument("--checkpoint", help="checkpoint file (default: OUTPUT.ckpt)")
    p.add_argument("--checkpoint-every", type=int, dest="checkpoint_every", help="epochs between checkpoints (default 5)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("--stream", action="store_true", help="read frames from the files per minibatch (datasets larger than memory)")
    p.add_argument("--devices", type=int, help="split the energies over this many devices (must divide the number of energies)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="Python file registering priors/parametrisations/recipes, loaded first (repeatable)")
    p.add_argument("--prior", action="append", default=[], metavar="NAME=WEIGHT",
                   help="add a registered prior or set its weight (0 removes it) (repeatable)")
    p.set_defaults(func=run)


def with_prior_weights(config, assignments):
    """``config`` with each ``NAME=WEIGHT`` of ``assignments`` applied to its priors (other options of
    a prior already in the recipe are kept). Unknown priors and malformed weights raise PtyjaxError."""
    spec = {name: dict(options) for name, options in config.priors.items()}
    for text in assignments:
        name, sep, value = text.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not sep or not name or weight is None:
            raise PtyjaxError(f"--prior expects NAME=WEIGHT (e.g. object_tv=0.1), got {text!r}")
        priors.get(name)  # raises with the list of registered priors
        spec.setdefault(name, {})["weight"] = weight
    return dataclasses.replace(config, priors=spec)


def run(args) -> int:
    overrides = {k: getattr(args, k) for k in ("epochs", "converged_fall", "batch_size", "n_modes", "loss", "defocus_m", "seed", "checkpoint_every", "sampling")}
    if args.no_positions:
        overrides["refine_positions"] = False
    plugins.load_all(args.plugin)
    config = with_prior_weights(recipes.fit_config(args.model, **overrides), args.prior)
    dataset = Dataset.open(args.paths)
    checkpoint = args.checkpoint or str(Path(args.output)) + ".ckpt"
    result = reconstruct(dataset, config, checkpoint=checkpoint, resume=args.resume, progress=not args.quiet,
                         stream=args.stream, devices=args.devices)
    save_reconstruction(args.output, result, extra_config={"model": args.model, "inputs": [str(f) for f in dataset.files],
                                                                   "plugins": [str(p) for p in args.plugin]})
    print(f"reconstructed {len(dataset)} energies on a {result.problem.grid.shape[0]}x{result.problem.grid.shape[1]} grid "
          f"of {result.problem.grid.pixel_size * 1e9:.2f} nm; final loss {result.loss_history[-1]:.4g} -> {args.output}")
    return 0
