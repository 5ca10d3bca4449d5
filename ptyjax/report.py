"""A one-page HTML report of a results file: figures (PNG), key numbers and TIFF exports.

Figures and TIFFs are exports of the results file, never the only copy. Sections whose group is
missing from the file are skipped with a note on the page.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import h5py
import numpy as np
import tifffile

from . import plots
from .cluster import BOUNDARY_REACH_PX, adjusted_rand_index_inside
from .errors import DataError
from .metrics import loss_trend
from .results import read_group, units_of

TRUTH_DATASET = "phase_label"


def export_tiff(path, array, pixel_size_m: float | None = None) -> Path:
    """Write a 2-D map or (E, Ny, Nx) stack as float32 ImageJ TIFF, pixel size (µm) in the resolution tags."""
    array = np.asarray(array, np.float32)
    kwargs = {"imagej": True, "metadata": {"axes": "ZYX" if array.ndim == 3 else "YX"}}
    if pixel_size_m:
        per_um = 1e-6 / pixel_size_m  # pixels per micrometre
        kwargs["resolution"] = (per_um, per_um)
        kwargs["metadata"]["unit"] = "um"
    tifffile.imwrite(path, array, **kwargs)
    return Path(path)


def read_truth_labels(path) -> np.ndarray:
    """The ``phase_label`` dataset (anywhere in the HDF5 file ``path``): 0 outside, 1.. phases."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "truth file does not exist")
    found = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.append(obj[()]) if isinstance(obj, h5py.Dataset) and name.split("/")[-1] == TRUTH_DATASET else None)
    if not found:
        raise DataError(path, f"has no '{TRUTH_DATASET}' dataset")
    return np.asarray(found[0])


def write_report(results_path, out_dir, truth_path=None) -> Path:
    """Write figures, TIFFs and ``index.html`` for ``results_path`` into ``out_dir``; returns the page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = {name: _try_read(results_path, name) for name in ("reconstruction", "spectra", "chemistry", "clustering")}
    pixel_size = float(groups["reconstruction"]["pixel_size"]) if groups["reconstruction"] and "pixel_size" in groups["reconstruction"] else None
    sections = [
        _reconstruction_section(groups["reconstruction"], out, pixel_size),
        _chemistry_section(groups["chemistry"], out, pixel_size, results_path),
        _clustering_section(groups["clustering"], groups["chemistry"], out, pixel_size, truth_path, results_path),
    ]
    if truth_path is not None:
        sections.append(_truth_section(results_path, truth_path))
    page = out / "index.html"
    page.write_text(_page(Path(results_path).name, sections), encoding="utf-8")
    return page


def _truth_labels_on(shape, truth_path, results_path):
    """The truth's phase labels on the results grid: as stored when the shapes match, else resampled
    (nearest neighbour) from a simulator truth file's own grid; None when neither works."""
    truth = read_truth_labels(truth_path)
    if truth.shape == tuple(shape):
        return truth
    try:
        from .metrics import truth_on_results_grid

        return np.nan_to_num(truth_on_results_grid(results_path, truth_path, [TRUTH_DATASET])[TRUTH_DATASET], nan=0).astype(int)
    except Exception:  # not a simulator truth file (no grid description)
        return None


def _truth_section(results_path, truth_path):
    """Agreement with a simulator's truth file: object NRMSE and phase FRC per energy, chemistry
    errors and the groups' adjusted Rand index (:mod:`ptyjax.metrics`)."""
    from .metrics import compare_chemistry_to_truth, compare_to_truth

    name = html.escape(Path(truth_path).name)
    body = []
    try:
        s = compare_to_truth(results_path, truth_path)
        frc = np.asarray(s["frc_resolution_m"])
        body.append(f"<p>Object against {name}: complex NRMSE median <b>{np.median(s['nrmse']):.4f}</b> "
                    f"({np.min(s['nrmse']):.4f}-{np.max(s['nrmse']):.4f}); phase FRC(0.5) resolution median "
                    f"<b>{np.median(frc) * 1e9:.1f} nm</b> ({np.min(frc) * 1e9:.1f}-{np.max(frc) * 1e9:.1f} nm); positions "
                    f"{s['position_rms_nominal_m'] * 1e9:.1f} nm RMS nominal, {s['position_rms_refined_m'] * 1e9:.1f} nm refined "
                    f"({s['position_rms_energy_m'] * 1e9:.1f} nm in each energy's mean, the stack's registration; "
                    f"{s['position_rms_point_m'] * 1e9:.1f} nm per point).</p>")
    except Exception as exc:  # e.g. a truth file with labels only
        body.append(f"<p class='missing'>No object comparison: {html.escape(str(exc))}</p>")
    try:
        c = compare_chemistry_to_truth(results_path, truth_path)
        items = [f"{k.replace('_rmse_ev', '')} RMSE {v:.2f} eV" for k, v in c.items() if k.endswith("_rmse_ev")]
        items += [f"{k.replace('_mean_relative_error', '')} mean relative error {100 * v:.0f} %" for k, v in c.items() if k.endswith("_mean_relative_error")]
        if "adjusted_rand_index" in c:
            items.append(f"adjusted Rand index {c['adjusted_rand_index']:.3f} ({c['n_groups']} groups)")
        body.append(f"<p>Chemistry inside the particle eroded by 2 px ({c['pixels']} pixels; one global edge-energy offset "
                    f"removed per element): {'; '.join(items)}.</p>")
    except Exception as exc:  # no /chemistry yet
        body.append(f"<p class='missing'>No chemistry comparison: {html.escape(str(exc))}</p>")
    return _section("Agreement with the simulator's truth", body)


def _reconstruction_section(rec, out, pixel_size):
    if rec is None:
        return _missing("Reconstruction", "reconstruction", "ptyjax reconstruct")
    body, figures = [], []
    energy = np.asarray(rec.get("energy", []), float)
    if energy.size:
        edges = plots.split_edges(energy)
        runs = ", ".join(f"{len(s)} energies {energy[s].min():.1f}-{energy[s].max():.1f} eV" for s in edges)
        body.append(f"<p>{energy.size} energies: {runs}.</p>")
    if "object" in rec:
        obj = rec["object"]
        size = f", pixel size {pixel_size * 1e9:.2f} nm" if pixel_size else ""
        body.append(f"<p>Object grid {obj.shape[-2]} × {obj.shape[-1]} pixels{size}.</p>")
        figures.append(_figure(out, "object.png", plots.object_images(obj, energy if energy.size else np.arange(obj.shape[0]), pixel_size_m=pixel_size), "Object amplitude and phase"))
        tiffs = [export_tiff(out / "object_amplitude.tif", np.abs(obj), pixel_size), export_tiff(out / "object_phase.tif", np.angle(obj), pixel_size)]
        body.append("<p>TIFF stacks (float32, one page per energy): " + ", ".join(_link(t) for t in tiffs) + ".</p>")
    if "loss" in rec:
        loss = np.atleast_1d(rec["loss"])
        fall, k = loss_trend(loss)
        trend = "" if not np.isfinite(fall) else f" Over the last {k} epochs it still fell by {100 * fall:.2g} % per epoch."
        body.append(f"<p>Final loss {loss[-1]:.4g} after {loss.size} epochs.{trend}</p>")
        figures.append(_figure(out, "loss.png", plots.loss_curve(loss), "Reconstruction loss"))
    return _section("Reconstruction", body + figures)


def _chemistry_section(chem, out, pixel_size, results_path):
    if chem is None:
        return _missing("Chemistry", "chemistry", "ptyjax chemistry")
    names = [n for n in chem if n not in ("attrs", "mask") and not n.endswith("_std") and np.ndim(chem[n]) == 2]
    if not names:
        return _section("Chemistry", ["<p class='missing'>/chemistry holds no maps.</p>"])
    mask = np.asarray(chem.get("mask", np.ones_like(chem[names[0]], bool)), bool)
    units = {n: units_of(results_path, f"chemistry/{n}") for n in names}
    body = [f"<p>{mask.sum()} particle pixels. {html.escape(_analysis_settings(chem.get('attrs', {})))}</p>",
            "<table><tr><th>map</th><th>median</th><th>median std</th><th>units</th></tr>"]
    for n in names:
        std = chem.get(f"{n}_std")
        body.append(f"<tr><td>{n}</td><td>{np.nanmedian(chem[n][mask]):.4g}</td><td>{np.nanmedian(std[mask]) if std is not None else float('nan'):.3g}</td><td>{html.escape(units[n])}</td></tr>")
    body.append("</table>")
    stds = {n: chem[f"{n}_std"] for n in names if f"{n}_std" in chem}
    body.append(_figure(out, "chemistry_maps.png", plots.parameter_maps({n: chem[n] for n in names}, pixel_size, stds, units), "Chemical maps and their standard deviations"))
    tiffs = [export_tiff(out / f"{n}.tif", chem[n], pixel_size) for n in names + [f"{n}_std" for n in stds]]
    body.append("<p>TIFF maps (float32, NaN outside the particle): " + ", ".join(_link(t) for t in tiffs) + ".</p>")
    return _section("Chemistry", body)


def _analysis_settings(attrs) -> str:
    """One sentence on how the maps were made, from the ``/chemistry`` attributes (empty if unknown)."""
    if "e0_method" not in attrs:
        return ""
    text = f"Edge energies by '{attrs['e0_method']}', smoothing {float(attrs.get('smooth_px', 0)):g} px"
    if "smooth_px_candidates" in attrs:
        candidates = ", ".join(f"{float(c):g}" for c in np.atleast_1d(attrs["smooth_px_candidates"]))
        text += f" (chosen among {candidates} px: the most certain phase groups)"
    if attrs.get("denoise", "none") == "none":
        return text + ", no spectral denoising."
    ranks = f"OD {attrs.get('denoise_rank_optical_density', '?')}, phase {attrs.get('denoise_rank_phase', '?')}"
    return text + f", spectral denoising '{attrs['denoise']}' ({ranks} components kept, plus each edge's shift direction)."


def _clustering_section(clu, chem, out, pixel_size, truth_path, results_path=None):
    if clu is None:
        return _missing("Clustering", "clustering", "ptyjax cluster")
    labels, features = clu["labels"], list(clu["features"])
    units = dict(zip(features, clu.get("feature_units", [""] * len(features))))
    k = int(clu["means"].shape[0])
    k_tried = np.atleast_1d(clu["k_tried"])
    criterion = str(clu.get("attrs", {}).get("criterion", "bic")).upper()
    merged = json.loads(str(clu.get("attrs", {}).get("merged_boundaries", "[]")))
    fitted = k + len(merged)  # the mixture's K, before boundary groups were merged
    how = f"chosen by {criterion} among K = {', '.join(map(str, k_tried))}" if k_tried.size > 1 else "(fixed)"
    body = [f"<p>{k} groups ({fitted} {how}); features: {', '.join(features)}.</p>" if merged else
            f"<p>{k} groups {how}; features: {', '.join(features)}.</p>"]
    for m in merged:
        first, second = m["between"]
        body.append(f"<p>A group of {m['pixels']} mixed pixels along the boundary of groups {first} and {second} "
                    f"({m['share']:.0%} of them within {BOUNDARY_REACH_PX} px of both) was merged into them.</p>")
    if truth_path is not None:
        truth = _truth_labels_on(labels.shape, truth_path, results_path)
        if truth is not None:
            ari = adjusted_rand_index_inside(labels, truth)
            body.append(f"<p>Adjusted Rand index against the truth ({html.escape(Path(truth_path).name)}), all particle pixels: <b>{ari:.3f}</b>.</p>")
        else:  # truth on another grid, without the grid description needed to resample it
            body.append(f"<p class='missing'>Truth labels and groups {labels.shape} are on different grids: no adjusted Rand index.</p>")
    head = "".join(f"<th>{html.escape(_label(f, units))}</th>" for f in features)
    body.append(f"<table><tr><th>group</th><th>pixels</th>{head}</tr>")
    for g in range(k):
        cells = "".join(f"<td>{m:.4g} ± {s:.2g}</td>" for m, s in zip(clu["pixel_means"][g], clu["pixel_stds"][g]))
        body.append(f"<tr><td style='color:{plots.group_colour(g)}'>■ {g}</td><td>{clu['counts'][g]}</td>{cells}</tr>")
    body.append("</table><p>Mean ± standard deviation of the measured values of each group's pixels.</p>")
    body.append(_figure(out, "groups.png", plots.group_map(labels, pixel_size, f"{k} groups"), "Map of groups"))
    if chem is not None and all(f in chem for f in features):
        inside = labels != -1
        values = {f: np.asarray(chem[f])[inside] for f in features}
        body.append(_figure(out, "scatter_matrix.png", plots.scatter_matrix(values, labels[inside], units), "Features per pixel by group"))
    scores = {"BIC": np.atleast_1d(clu["bic"])}
    if "icl" in clu:
        scores["ICL"] = np.atleast_1d(clu["icl"])
    body.append(_figure(out, "bic.png", plots.bic_curve(k_tried, scores, fitted, criterion), "Model-selection criteria against the number of groups"))
    if "group_optical_density" in clu and "energy" in clu:
        body.append(_figure(out, "group_spectra.png", plots.group_spectra(clu["energy"], clu["group_optical_density"], clu.get("group_phase")), "Group-mean spectra"))
    body.append(f"<p>Label map TIFF: {_link(export_tiff(out / 'group_labels.tif', labels, pixel_size))}.</p>")
    return _section("Clustering", body)


def _try_read(path, group):
    try:
        return read_group(path, group)
    except DataError as error:
        if "does not exist" in error.problem or "cannot be read" in error.problem:
            raise
        return None


def _figure(out, name, fig, caption):
    plots.save(fig, out / name)
    return f"<figure><a href='{name}'><img src='{name}' alt='{html.escape(caption)}'></a><figcaption>{html.escape(caption)}</figcaption></figure>"


def _link(path):
    return f"<a href='{Path(path).name}'>{Path(path).name}</a>"


def _label(name, units):
    u = units.get(name, "")
    return f"{name} ({u})" if u else name


def _section(title, parts):
    return f"<section><h2>{title}</h2>\n" + "\n".join(parts) + "\n</section>"


def _missing(title, group, command):
    return _section(title, [f"<p class='missing'>The results file has no /{group} group (run <code>{command}</code>); section skipped.</p>"])


def _page(title, sections):
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "img{max-width:100%}figure{display:inline-block;margin:0.5em;vertical-align:top}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        ".missing{color:#a00}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ptyjax report: {html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>ptyjax report: {html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
