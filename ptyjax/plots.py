"""Publication figures of a ptyjax result (matplotlib, Agg backend: no screen needed).

Every function takes arrays (SI units: metres, eV) and returns a :class:`matplotlib.figure.Figure`;
:func:`save` writes it as PNG. Images carry colour bars with units and a scale bar from the pixel
size.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 150
# Colour-blind-safe qualitative palette (Okabe & Ito, 2008) for groups.
GROUP_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
UNASSIGNED_COLOUR = "#999999"
# Energies further apart than this (eV) belong to different absorption edges (Mn K to Ni K: ~1.8 keV).
EDGE_GAP_EV = 300.0


def save(fig: Figure, path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG to ``path`` and close it."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def group_colour(k: int) -> str:
    return GROUP_COLOURS[k % len(GROUP_COLOURS)]


def add_scale_bar(ax, pixel_size_m: float, width_px: int):
    """Draw a scale bar of a round length (1, 2 or 5 x 10^n m, ~1/5 of the image) in the lower left."""
    target = width_px * pixel_size_m / 5.0
    exponent = np.floor(np.log10(target))
    length = max(m for m in (1.0, 2.0, 5.0) if m * 10**exponent <= target) * 10**exponent
    n_px = length / pixel_size_m
    text = f"{length * 1e6:g} µm" if length >= 1e-6 else f"{length * 1e9:g} nm"
    ny = ax.get_images()[0].get_array().shape[0] if ax.get_images() else width_px
    y = ny - 0.06 * ny
    ax.plot([0.05 * width_px, 0.05 * width_px + n_px], [y, y], color="white", lw=3, solid_capstyle="butt")
    ax.plot([0.05 * width_px, 0.05 * width_px + n_px], [y, y], color="black", lw=1, solid_capstyle="butt")
    ax.text(0.05 * width_px + n_px / 2, y - 0.03 * ny, text, color="black", ha="center", va="bottom", fontsize=7,
            bbox=dict(facecolor="white", alpha=0.7, edgecolor="none", pad=1))


def image(ax, array, pixel_size_m=None, title="", units="", cmap="viridis", **kwargs):
    """Show a 2-D map with a colour bar labelled ``units`` and a scale bar; NaN shown blank."""
    im = ax.imshow(array, cmap=cmap, interpolation="nearest", **kwargs)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(units, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if pixel_size_m:
        add_scale_bar(ax, pixel_size_m, array.shape[1])
    return im


def particle_window(inside, margin: float = 0.15):
    """Slices (rows, cols) of the bounding box of ``inside`` (Ny, Nx) bool, widened by ``margin`` of its
    size on each side (at least 3 px) and clipped to the image: a figure shows the particle, not the
    empty field around it. The whole image if ``inside`` is empty."""
    inside = np.asarray(inside, bool)
    if not inside.any():
        return slice(None), slice(None)
    window = []
    for axis in (1, 0):
        hit = np.flatnonzero(inside.any(axis=axis))
        pad = max(3, int(round(margin * (hit[-1] - hit[0] + 1))))
        window.append(slice(max(0, hit[0] - pad), min(inside.shape[1 - axis], hit[-1] + pad + 1)))
    return tuple(window)


def group_map(labels, pixel_size_m=None, title="Groups") -> Figure:
    """Map of group labels (0..K-1 coloured, -2 unassigned grey, -1 outside white), cropped to the
    labelled pixels (:func:`particle_window`)."""
    labels = np.asarray(labels)
    labels = labels[particle_window(labels != -1)]
    k = int(labels.max()) + 1 if labels.max() >= 0 else 0
    cmap = ListedColormap(["white", UNASSIGNED_COLOUR] + [group_colour(i) for i in range(k)])
    shown = np.where(labels == -1, -2, np.where(labels == -2, -1, labels))  # outside first in the colour map
    norm = BoundaryNorm(np.arange(-2.5, k), cmap.N)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    handles = [plt.Rectangle((0, 0), 1, 1, color=group_colour(i)) for i in range(k)]
    names = [f"group {i}" for i in range(k)]
    if np.any(labels == -2):
        handles.append(plt.Rectangle((0, 0), 1, 1, color=UNASSIGNED_COLOUR))
        names.append("unassigned")
    ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    if pixel_size_m:
        add_scale_bar(ax, pixel_size_m, labels.shape[1])
    return fig


def scatter_matrix(features: dict, labels, units: dict | None = None, max_points: int = 5000, seed: int = 0) -> Figure:
    """Pairwise scatter of per-pixel ``features`` {name: (N,)} coloured by ``labels`` (N,); histograms on the diagonal."""
    names = list(features)
    labels = np.asarray(labels)
    units = units or {}
    keep = np.flatnonzero(labels >= 0)
    if keep.size > max_points:  # a subset keeps the figure light; the seed keeps it reproducible
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_points, replace=False))
    n = len(names)
    fig, axes = plt.subplots(n, n, figsize=(2.0 * n + 0.5, 2.0 * n), squeeze=False)
    groups = np.unique(labels[keep])
    for i, yi in enumerate(names):
        for j, xj in enumerate(names):
            ax = axes[i, j]
            x = np.asarray(features[xj])[keep]
            for g in groups:
                sel = labels[keep] == g
                if i == j:
                    ax.hist(x[sel], bins=30, color=group_colour(g), alpha=0.6, range=_range(x))
                else:
                    ax.scatter(x[sel], np.asarray(features[yi])[keep][sel], s=2, color=group_colour(g), alpha=0.5, lw=0)
            if i == j:
                ax.set_xlim(_range(x))
            else:
                ax.set_xlim(_range(x))
                ax.set_ylim(_range(np.asarray(features[yi])[keep]))
            ax.tick_params(labelsize=6)
            # Edge energies (~8344 eV) have long tick labels: three ticks, no offset, tilted.
            ax.xaxis.set_major_locator(MaxNLocator(3))
            ax.ticklabel_format(useOffset=False, style="plain")
            plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
            if i == n - 1:
                ax.set_xlabel(_label(xj, units), fontsize=7)
            if j == 0:
                ax.set_ylabel("pixels" if i == j else _label(yi, units), fontsize=7)
    handles = [plt.Line2D([], [], marker="o", ls="", color=group_colour(g)) for g in groups]
    fig.legend(handles, [f"group {g}" for g in groups], loc="upper right", fontsize=8, frameon=False)
    fig.suptitle("Chemical parameters per pixel, coloured by group", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 0.97))
    return fig


def bic_curve(k_tried, scores, chosen: int | None = None, criterion: str = "BIC") -> Figure:
    """Model-selection criteria ``scores`` {name: (K,)} (or one BIC array) against the number of
    groups; the chosen number marked on the ``criterion`` curve."""
    if not isinstance(scores, dict):
        scores = {"BIC": np.asarray(scores)}
    fig, ax = plt.subplots(figsize=(4, 3))
    for (name, values), style in zip(scores.items(), ("o-", "s--", "^:")):
        ax.plot(k_tried, values, style, color="black" if name == criterion else "grey", label=name)
    if chosen is not None and chosen in list(k_tried) and criterion in scores:
        i = list(k_tried).index(chosen)
        ax.plot([chosen], [scores[criterion][i]], "o", ms=12, mfc="none", color="#D55E00", label=f"chosen: {chosen}")
    ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel("number of groups K")
    ax.set_ylabel("criterion (lower is better)")
    ax.set_xticks(list(k_tried))
    ax.set_title("Model selection", fontsize=10)
    fig.tight_layout()
    return fig


def group_spectra(energy_ev, group_od, group_phase=None) -> Figure:
    """Group-mean optical density (and phase) against energy, one column per absorption edge."""
    energy_ev = np.asarray(energy_ev, float)
    edges = split_edges(energy_ev)
    rows = [("optical density", np.asarray(group_od), "OD (1)")]
    if group_phase is not None:
        rows.append(("phase", np.asarray(group_phase), "phase (rad)"))
    fig, axes = plt.subplots(len(rows), len(edges), figsize=(3.6 * len(edges), 2.7 * len(rows)), squeeze=False)
    for c, sel in enumerate(edges):
        for r, (name, values, ylabel) in enumerate(rows):
            ax = axes[r, c]
            for g in range(values.shape[0]):
                ax.plot(energy_ev[sel], values[g, sel], ".-", color=group_colour(g), label=f"group {g}", ms=3)
            ax.set_xlabel("photon energy (eV)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{name}, {energy_ev[sel].min():.0f}-{energy_ev[sel].max():.0f} eV", fontsize=9)
            ax.ticklabel_format(useOffset=False, axis="x")
    axes[0, -1].legend(fontsize=7, frameon=False)
    fig.suptitle("Group-mean spectra", fontsize=10)
    fig.tight_layout()
    return fig


def parameter_maps(maps: dict, pixel_size_m=None, stds: dict | None = None, units: dict | None = None) -> Figure:
    """One row per chemical map {name: (Ny, Nx)}: the value and, if given, its standard deviation,
    cropped to the pixels where any map is measured (:func:`particle_window`). Colour ranges: the 1st
    to 99th percentile of a map, 0 to the 95th of a standard deviation (a few thin edge pixels have
    uncertainties far above the rest)."""
    stds, units = stds or {}, units or {}
    names = list(maps)
    window = particle_window(np.any([np.isfinite(np.asarray(m, float)) for m in maps.values()], axis=0))
    maps = {n: np.asarray(m)[window] for n, m in maps.items()}
    stds = {n: np.asarray(m)[window] for n, m in stds.items()}
    cols = 2 if stds else 1
    fig, axes = plt.subplots(len(names), cols, figsize=(3.8 * cols, 3.0 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        image(axes[r, 0], maps[name], pixel_size_m, title=name, units=units.get(name, ""), vmin=_pct(maps[name], 1), vmax=_pct(maps[name], 99))
        if cols == 2:
            if name in stds:
                image(axes[r, 1], stds[name], pixel_size_m, title=f"{name} std", units=units.get(name, ""), cmap="magma", vmin=0, vmax=_pct(stds[name], 95))
            else:
                axes[r, 1].set_axis_off()
    fig.tight_layout()
    return fig


def object_images(obj, energy_ev, indices=None, pixel_size_m=None) -> Figure:
    """Amplitude ``|O|`` and phase ``arg O`` (rad) of the (E, Ny, Nx) object at the chosen energy indices.

    Default: the lowest and highest energy (below and above the edge) of each absorption edge.
    """
    obj = np.asarray(obj)
    energy_ev = np.asarray(energy_ev, float)
    if indices is None:
        indices = [int(i) for run in split_edges(energy_ev) for i in dict.fromkeys((run[0], run[-1]))]
    fig, axes = plt.subplots(2, len(indices), figsize=(3.4 * len(indices), 5.6), squeeze=False)
    for c, i in enumerate(indices):
        image(axes[0, c], np.abs(obj[i]), pixel_size_m, title=f"amplitude, {energy_ev[i]:.1f} eV", units="|O| (1)", cmap="gray")
        image(axes[1, c], np.angle(obj[i]), pixel_size_m, title=f"phase, {energy_ev[i]:.1f} eV", units="rad", cmap="cividis")
    fig.tight_layout()
    return fig


def loss_curve(loss) -> Figure:
    """Reconstruction loss per epoch (log scale when positive)."""
    loss = np.asarray(loss, float)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.arange(1, loss.size + 1), loss, color="black")
    if np.all(loss[np.isfinite(loss)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Reconstruction loss", fontsize=10)
    fig.tight_layout()
    return fig


def split_edges(energy_ev, gap_ev: float = EDGE_GAP_EV) -> list[np.ndarray]:
    """Index arrays of the energies of each absorption edge (sorted runs separated by > ``gap_ev``)."""
    order = np.argsort(energy_ev)
    breaks = np.flatnonzero(np.diff(np.asarray(energy_ev)[order]) > gap_ev) + 1
    return np.split(order, breaks)


def _label(name, units):
    u = units.get(name, "")
    return f"{name} ({u})" if u else name


def _range(x):
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, [1, 99])  # clip outliers so the groups stay visible
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _pct(a, q):
    finite = np.asarray(a)[np.isfinite(a)]
    return float(np.percentile(finite, q)) if finite.size else None
