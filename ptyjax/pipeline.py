"""The whole pipeline in one call: reconstruct -> analyze -> cluster -> report, from one configuration.

The configuration is a TOML file with one table per stage; ``ptyjax config --defaults`` prints
every option with its default and meaning. Unknown keys are errors (a typo must not be ignored).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import NamedTuple

from . import recipes
from .errors import PtyjaxError
from .fit import FitConfig

# Defaults of the stages after reconstruction, with a one-line meaning each (printed by `config`).
STAGE_DEFAULTS = {
    "analyze": {
        "edges": ("", "comma-separated absorbing elements, e.g. 'Mn,Ni' (empty: detected from the energies)"),
        "e0_method": ("fit", "edge energy definition: fit | derivative | half-jump"),
        # 1 px: below the reconstruction's resolution (phase FRC 1.4-2 px on the simulator presets), while
        # averaging the per-pixel noise (small preset: Mn E0 RMSE 0.49 -> 0.32 eV, ARI 0.39 -> 0.65).
        # MNF is opt-in: sharper chemistry (small preset: Ni/Mn error 28 -> 16 %, Mn E0 RMSE 0.29 ->
        # 0.24 eV; at 1e5 photons/frame 122 -> 51 %, 0.62 -> 0.47 eV) and a higher ARI, but ICL then
        # counts mixed boundary pixels as extra groups (demo: 4-6 instead of 3). Six particles at
        # convergence: with [cluster] outline_px = 1 as well, mean ARI 0.863 -> 0.892 and K = 3 on 5 of 6
        # (cluster_error_budget_small.md section 7); not yet the default (validated on this simulator only).
        "denoise": ("none", "spectral denoising before fitting (fit method only): none | mnf (noise-adjusted principal components plus each edge's shift direction)"),
        "smooth_px": (1.0, "Gaussian smoothing of spectra before fitting, in pixels (0: none), or 'auto': the candidate whose groups are the most certain (see README)"),
        # OD only by default: on the small preset's reconstruction the phase adds no clear gain (its errors
        # are spatially smooth, so the 1 px smoothing does not reduce them as it does the OD's); on the
        # true object with white noise it halves the Ni/Mn error. See README "Chemistry".
        "edge_spectra": ("od", "spectra the edge fits use (fit method): od | od+phase (jointly, linked by Kramers-Kronig)"),
    },
    "cluster": {
        "features": ("", "comma-separated /chemistry map names (empty: the thickness-independent ones)"),
        "n_groups": (0, "fixed number of groups (0: chosen by the criterion)"),
        "max_groups": (6, "largest number of groups tried"),
        "criterion": ("icl", "how the number of groups is chosen: icl (well-separated clusters) | bic"),
        "spatial_strength": ("auto", "Potts interaction per neighbour: a number, or 'auto' (estimated from the data)"),
        "boundary_groups": ("merge", "a group of mixed pixels along the boundary of two others: merge (into them) | keep"),
        "outline_px": (0, "pixels within this many of the particle's edge get no data term: their neighbours decide their group (0: off)"),
        "seed": (0, "random seed: same seed, same labels"),
    },
    "report": {
        "enabled": (True, "write figures, TIFFs and index.html next to the results file"),
    },
}

_RECONSTRUCT_HELP = {
    "model": "model recipe (see `ptyjax models`)",
    "epochs": "most passes over all scan points (the run stops earlier once converged)",
    "converged_fall": "stop once the objective falls by less than this fraction per epoch over the last convergence_window epochs (0: run all epochs)",
    "convergence_window": "epochs over which the objective's fall is averaged for the stopping rule",
    "batch_size": "largest number of scan points per energy in one step (spread evenly over ceil(points / batch_size) steps)",
    "n_modes": "incoherent probe modes",
    "loss": "noise model: amplitude | poisson",
    "priors": "priors and their options (set by the model recipe)",
    "object_step": "object step, in units of the preconditioned full step",
    "probe_step": "probe step, in units of the preconditioned full step",
    "momentum": "momentum of object and probe steps",
    "probe_start_epoch": "epoch at which probe updates start",
    "prior_start_epoch": "epoch at which the priors start (after the stack's first registrations)",
    "refine_positions": "refine per-energy drift and per-point jitter",
    "position_step": "fraction of the Gauss-Newton step for positions",
    "position_max_move": "largest position move per step, common-grid pixels",
    "position_start_epoch": "epoch at which position refinement starts",
    "position_curvature_every": "epochs between refreshes of each point's position curvature (1: every step)",
    "illumination_floor": "preconditioner floor, fraction of the maximum illumination",
    "defocus_m": "starting probe defocus in m (unset: estimated from the data)",
    "defocus_trial_epochs": "epochs of each defocus trial",
    "seed": "seed of the minibatch order",
    "checkpoint_every": "epochs between checkpoints",
    "register_every": "epochs between registrations of the energies to each other (0: never)",
    "object_model": "object parametrisation (registered in ptyjax.model.OBJECT_MODELS)",
    "object_options": "options of the object parametrisation (set by the model recipe)",
    "sampling": "how frames see the object: auto | exact (per-frame matrices) | native-grid (faster, less accurate across pixel sizes)",
}


def load_config(path=None) -> dict:
    """The pipeline configuration: defaults updated by the TOML file ``path`` (if given)."""
    config = {"reconstruct": {"model": recipes.DEFAULT_MODEL}}
    config.update({stage: {k: v for k, (v, _) in options.items()} for stage, options in STAGE_DEFAULTS.items()})
    if path is None:
        return config
    path = Path(path)
    try:
        with open(path, "rb") as f:
            user = tomllib.load(f)
    except FileNotFoundError:
        raise PtyjaxError(f"{path}: configuration file does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise PtyjaxError(f"{path}: not valid TOML ({error})") from None
    for stage, values in user.items():
        if stage not in config:
            raise PtyjaxError(f"{path}: unknown section [{stage}]; sections: {sorted(config)}")
        allowed = set(config[stage]) | ({f.name for f in dataclasses.fields(FitConfig)} if stage == "reconstruct" else set())
        unknown = set(values) - allowed
        if unknown:
            raise PtyjaxError(f"{path}: unknown option(s) {sorted(unknown)} in [{stage}]")
        config[stage].update(values)
    _check_analysis(config["analyze"], path)
    _check_clustering(config["cluster"], path)
    return config


def _check_clustering(options: dict, path) -> None:
    """Fail when the file is read on clustering options that cannot run (see :func:`_check_analysis`)."""
    from .cluster import check_options

    try:
        check_options(criterion=options["criterion"], spatial_strength=options["spatial_strength"],
                      boundary_groups=options["boundary_groups"], outline_px=options["outline_px"])
        for name, least in (("n_groups", 0), ("max_groups", 1), ("seed", 0)):
            if not isinstance(options[name], int) or isinstance(options[name], bool) or options[name] < least:
                raise PtyjaxError(f"{name} must be an integer >= {least}, not {options[name]!r}")
    except PtyjaxError as error:
        raise PtyjaxError(f"{path}: [cluster] {error}") from None


def _check_analysis(options: dict, path) -> None:
    """Fail when the file is read, not after the reconstruction, on analysis options that cannot run."""
    from .chemistry import check_analysis_options

    try:
        check_analysis_options(options["e0_method"], options["denoise"], options["smooth_px"], options["edge_spectra"])
    except PtyjaxError as error:
        raise PtyjaxError(f"{path}: [analyze] {error}") from None


# Candidate smoothing widths (Gaussian sigma, px) for smooth_px = "auto": 0.5 px keeps phase boundaries
# (reconstructions resolve 1.4-2 px on the simulator presets); 1.5 px averages the noise of ~28 pixels.
SMOOTHING_CANDIDATES_PX = (0.5, 0.75, 1.0, 1.5)


def choose_smoothing(obj, energies_ev, pixel_size_m, candidates=SMOOTHING_CANDIDATES_PX, field_of_view=None,
                     analysis: dict | None = None, clustering: dict | None = None):
    """The smoothing (px) whose phase groups are the most certain, and the criterion per candidate.

    For each candidate the stack ``obj`` (E, Ny, Nx) is analysed (:func:`ptyjax.chemistry.analyze_stack`
    with ``analysis`` options) and clustered (:func:`ptyjax.cluster.cluster_chemistry`, ``clustering``
    options, default features). The criterion is the mean entropy of the group posteriors
    (:func:`ptyjax.cluster.classification_entropy`) over the pixels that every candidate labels: too
    little smoothing leaves noise that makes assignments uncertain, too much blurs boundaries into
    mixed pixels that are uncertain too. Only candidates whose clustering finds two or more groups
    compete (one group has zero entropy but maps no phases); if none does, the largest candidate is
    taken. Returns a :class:`SmoothingChoice`.

    Measured on the small preset (``experiments/results/smoothing_choice_small.md``): it picks 0.5 px at
    3e6, 3e7 and 3e8 photons per frame and 1-1.5 px for noisier reconstructions: the best ARI of the
    candidates in four of five cases.
    """
    import numpy as np

    from .chemistry import analyze_stack
    from .cluster import classification_entropy, cluster_chemistry, default_features

    clustering = dict(clustering or {})
    features = clustering.pop("features", None)
    groups, analyses = {}, {}
    for smooth in candidates:
        result = analyze_stack(obj, energies_ev, pixel_size_m, smooth_px=float(smooth), field_of_view=field_of_view, **(analysis or {}))
        if analyses:  # the spectra (raw OD and phase stacks) do not depend on the smoothing: keep one copy
            result["spectra"] = next(iter(analyses.values()))["spectra"]
        analyses[float(smooth)] = result
        chemistry = {k: v[0] for k, v in result["chemistry"].items()}
        groups[float(smooth)] = cluster_chemistry(chemistry, features or default_features(chemistry), **clustering)
    labelled = np.all([g.labels >= 0 for g in groups.values()], axis=0)
    if not labelled.any():
        raise PtyjaxError(f"no pixel is assigned to a group at every smoothing of {list(groups)}")
    entropy = {smooth: classification_entropy(g.probabilities, labelled) for smooth, g in groups.items()}
    separated = {smooth: h for smooth, h in entropy.items() if groups[smooth].n_groups >= 2}
    chosen = min(separated, key=separated.get) if separated else max(groups)
    return SmoothingChoice(chosen, entropy, groups, analyses[chosen])


class SmoothingChoice(NamedTuple):
    """Result of :func:`choose_smoothing`: the chosen ``smooth_px``, the criterion per candidate
    (mean posterior entropy, nats), the clustering of each candidate's maps and the chosen
    candidate's :func:`ptyjax.chemistry.analyze_stack` result."""

    smooth_px: float
    entropy: dict
    groups: dict
    analysis: dict


def defaults_toml() -> str:
    """Every option with its default, as a commented TOML document."""
    lines = ["# ptyjax pipeline configuration: every option with its default.", "", "[reconstruct]"]
    lines.append(f"# {_RECONSTRUCT_HELP['model']}")
    lines.append(f'model = "{recipes.DEFAULT_MODEL}"')
    for f in dataclasses.fields(FitConfig):
        value = getattr(FitConfig(), f.name)
        if isinstance(value, dict):
            lines.append(f"# {f.name} = {value!r}  ({_RECONSTRUCT_HELP[f.name]})")
            continue
        lines.append(f"# {_RECONSTRUCT_HELP[f.name]}")
        lines.append(f"# {f.name} = (estimated)" if value is None else f"{f.name} = {_toml(value)}")
    for stage, options in STAGE_DEFAULTS.items():
        lines += ["", f"[{stage}]"]
        for key, (value, meaning) in options.items():
            lines += [f"# {meaning}", f"{key} = {_toml(value)}"]
    return "\n".join(lines) + "\n"


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def run_pipeline(paths, results_path, config: dict | None = None, truth_path=None, progress: bool = True,
                 resume: bool = False) -> dict:
    """Reconstruct ``paths`` (CXI files/folders), analyze, cluster and report into ``results_path``.

    Returns a summary dict (final loss, groups found, report page). Energies that span no absorption
    edge (plain ptychography at one energy, or a pre-edge series) with no ``edges`` configured are
    reconstructed and reported; chemistry and clustering are skipped, and ``summary["skipped"]`` says why.
    """
    from .chemistry import analyze, detect_edges
    from .cluster import cluster, write_clustering
    from .data import Dataset
    from .fit import converged, reconstruct, save_reconstruction
    from .metrics import loss_trend

    config = config or load_config()
    rec = dict(config["reconstruct"])
    model = rec.pop("model", recipes.DEFAULT_MODEL)
    fit_config = recipes.fit_config(model, **rec)
    dataset = Dataset.open(paths)
    results_path = Path(results_path)
    result = reconstruct(dataset, fit_config, checkpoint=str(results_path) + ".ckpt", resume=resume, progress=progress)
    save_reconstruction(results_path, result, extra_config={"model": model, "inputs": [str(f) for f in dataset.files]})
    a = config["analyze"]
    c = config["cluster"]
    fall, k = loss_trend(result.loss_history)
    ended = "converged" if converged(result.loss_history, fit_config) else "the limit"
    summary = {"results": str(results_path), "final_loss": result.loss_history[-1],
               "epochs": f"{len(result.loss_history)} ({ended})",
               "loss_fall_per_epoch": f"{100 * fall:.2g} % (last {k} epochs)"}
    if not a["edges"] and not detect_edges(dataset.energies_ev):
        summary["skipped"] = (f"analyze and cluster: the energies {dataset.energies_ev.min():.1f}-{dataset.energies_ev.max():.1f} eV "
                              "span no K edge (name them with [analyze] edges to fit anyway)")
        return _report(results_path, config, truth_path, summary)
    features = [f for f in c["features"].split(",") if f] or None
    strength = c["spatial_strength"] if c["spatial_strength"] == "auto" else float(c["spatial_strength"])
    clustering = {"features": features, "n_groups": c["n_groups"] or None, "k_range": (1, c["max_groups"]), "seed": c["seed"],
                  "criterion": c["criterion"], "spatial_strength": strength, "boundary_groups": c["boundary_groups"],
                  "outline_px": c["outline_px"]}
    analysis = analyze(results_path, edges=a["edges"] or None, e0_method=a["e0_method"], smooth_px=a["smooth_px"],
                       denoise=a["denoise"], edge_spectra=a["edge_spectra"], clustering=clustering)
    if "clustering" in analysis:  # smooth_px "auto" clustered the chosen maps with these options already
        clusters = analysis["clustering"]
        write_clustering(results_path, clusters, **{k: v for k, v in clustering.items() if k != "features"})
    else:
        clusters = cluster(results_path, **clustering)
    summary.update(n_groups=clusters.n_groups, smooth_px=analysis["attrs"]["smooth_px"])
    return _report(results_path, config, truth_path, summary)


def _report(results_path, config, truth_path, summary) -> dict:
    """Write the report (if enabled) and add its page to ``summary``."""
    from .report import write_report

    if config["report"]["enabled"]:
        page = write_report(results_path, results_path.with_suffix("").as_posix() + "_report", truth_path=truth_path)
        summary["report"] = str(page)
    return summary
