"""``ptyjax simulate --preset {tiny,small,medium} -o DIR``: write a synthetic LNMO dataset with ground truth."""

from __future__ import annotations

from ..errors import PtyjaxError
from ..simulate import PRESETS, native_pixel_sizes, simulate


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "simulate",
        help="write a synthetic multi-energy ptychography-XAFS dataset (CXI files + truth.h5)",
        description="Simulate a LiNi0.5Mn1.5O4 particle across the Mn and Ni K edges: one CXI file per "
        "energy and truth.h5 with the ground truth.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small", help="dataset size (default: small)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument("--fluence", type=float, help="photons per frame (default: the preset's)")
    parser.add_argument("--seed", type=int, help="random seed (default: the preset's)")
    parser.add_argument("--modes", type=int, help="incoherent probe modes, 1-3 (default: the preset's)")
    parser.add_argument("--scan", choices=("spiral", "raster"), help="scan pattern (default: spiral)")
    parser.add_argument("--no-noise", action="store_true", help="write expected counts (no Poisson noise)")
    parser.add_argument("--oversample", type=int, help="compute exit waves on a grid this many times finer than the "
                        "native pixel and keep the detector's window of their far field (default 1: point sampling)")
    parser.set_defaults(func=run)


def run(args) -> int:
    changes = {k: v for k, v in (("fluence", args.fluence), ("seed", args.seed), ("n_modes", args.modes),
                                 ("scan", args.scan),
                                 ("oversample", args.oversample)) if v is not None}
    if args.no_noise:
        changes["poisson"] = False
    config = PRESETS[args.preset].replace(**changes)
    if config.fluence <= 0:
        raise PtyjaxError(f"--fluence must be positive, got {config.fluence}")
    if not 1 <= config.n_modes <= len(config.mode_powers):
        raise PtyjaxError(f"--modes must be between 1 and {len(config.mode_powers)}, got {config.n_modes}")
    truth = simulate(config, args.output)
    dx = native_pixel_sizes(config)
    energies = config.energies_ev
    print(
        f"simulated {len(energies)} energies ({energies[0]:.1f}-{energies[-1]:.1f} eV) x {config.n_positions} "
        f"frames of {config.frame_size}x{config.frame_size}, pixel {dx.min() * 1e9:.1f}-{dx.max() * 1e9:.1f} nm, "
        f"{config.fluence:.2g} photons/frame -> {truth.parent} (truth: {truth.name})"
    )
    return 0
