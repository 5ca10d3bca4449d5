"""``ptyjax cluster`` and ``ptyjax report`` end to end on a synthetic results file."""

import re

import matplotlib.image
import numpy as np
import pytest
import tifffile

from ptyjax import cli
from ptyjax.report import write_report
from ptyjax.results import read_group, write_group
from test_cluster import write_synthetic_results  # tests/ is on sys.path under pytest


@pytest.fixture(scope="module")
def clustered_file(tmp_path_factory):
    path, truth = write_synthetic_results(tmp_path_factory.mktemp("report") / "results.h5", n=40, n_energy=10)
    assert cli.main(["cluster", str(path), "--max-groups", "4", "--seed", "1"]) == 0
    return path, truth


def test_cluster_cli_writes_clustering(clustered_file):
    path, truth = clustered_file
    g = read_group(path, "clustering")
    assert g["k_tried"].tolist() == [1, 2, 3, 4]
    assert g["labels"].shape == truth.shape
    assert np.all(g["labels"][truth == 0] == -1)


def test_report_cli_writes_figures_tiffs_and_page(clustered_file, tmp_path):
    path, truth = clustered_file
    out = tmp_path / "report"
    assert cli.main(["report", str(path), "-o", str(out), "--truth", str(path.with_name("truth.h5"))]) == 0
    page = (out / "index.html").read_text()
    pngs = sorted(out.glob("*.png"))
    names = {p.name for p in pngs}
    assert {"object.png", "loss.png", "chemistry_maps.png", "groups.png", "scatter_matrix.png", "bic.png", "group_spectra.png"} <= names
    for png in pngs:
        assert png.stat().st_size > 1000
        assert matplotlib.image.imread(png).ndim == 3  # decodable RGB(A) image
        assert f"src='{png.name}'" in page
    # Key numbers on the page: grid, pixel size, groups and the adjusted Rand index.
    assert "40 × 40 pixels, pixel size 20.00 nm" in page
    ari = float(re.search(r"Adjusted Rand index .*?<b>([0-9.]+)</b>", page).group(1))
    assert ari >= 0.9
    # A truth file with labels only: the truth section says what it cannot compare instead of failing.
    assert "<h2>Agreement with the simulator's truth</h2>" in page
    assert "No object comparison" in page and "is not a ptyjax simulator truth file" in page  # names the problem
    # TIFFs: float32 stacks/maps with the pixel size (20 nm = 50 pixels per µm) in the resolution tags.
    with tifffile.TiffFile(out / "object_amplitude.tif") as tif:
        stack = tif.asarray()
        assert stack.shape == (10, 40, 40) and stack.dtype == np.float32
        assert tif.imagej_metadata["unit"] == "um"
        x_res = tif.pages[0].tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(50.0, rel=1e-4)
    obj = read_group(path, "reconstruction")["object"]
    np.testing.assert_allclose(tifffile.imread(out / "object_phase.tif"), np.angle(obj), atol=1e-6)
    ratio = tifffile.imread(out / "ni_mn_ratio.tif")
    assert ratio.shape == (40, 40) and np.isnan(ratio[0, 0])
    for name in ("edge_energy_Mn", "edge_energy_Mn_std", "group_labels"):
        assert f"href='{name}.tif'" in page and (out / f"{name}.tif").exists()


def test_report_notes_missing_sections(tmp_path):
    path = tmp_path / "only_reconstruction.h5"
    obj = np.ones((2, 8, 8), np.complex64)
    write_group(path, "reconstruction", {"object": (obj, "1"), "energy": (np.array([6530.0, 6560.0]), "eV"), "pixel_size": (10e-9, "m")})
    page = write_report(path, tmp_path / "out").read_text()
    assert "no /chemistry group" in page and "no /clustering group" in page
    assert "src='object.png'" in page


def test_report_of_missing_file_is_one_line_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not exist" in err


def test_particle_window_crops_to_the_particle_with_a_margin():
    from ptyjax.plots import particle_window

    inside = np.zeros((100, 80), bool)
    inside[40:60, 10:30] = True  # 20 x 20 px particle
    rows, cols = particle_window(inside, margin=0.15)
    assert (rows.start, rows.stop) == (37, 63) and (cols.start, cols.stop) == (7, 33)  # 3 px each side
    inside[:5, 70:] = True  # a second blob at the corner: the window clips to the image
    rows, cols = particle_window(inside, margin=0.15)
    assert rows.start == 0 and cols.stop == 80 and inside[rows, cols].sum() == inside.sum()
    assert particle_window(np.zeros((4, 4), bool)) == (slice(None), slice(None))


def test_report_says_how_the_maps_were_made():
    from ptyjax.report import _analysis_settings

    plain = _analysis_settings({"e0_method": "fit", "smooth_px": 1.0, "denoise": "none"})
    assert plain == "Edge energies by 'fit', smoothing 1 px, no spectral denoising."
    mnf = _analysis_settings({"e0_method": "fit", "smooth_px": 1.0, "denoise": "mnf",
                              "denoise_rank_optical_density": 7, "denoise_rank_phase": 14})
    assert "'mnf' (OD 7, phase 14 components kept" in mnf
    auto = _analysis_settings({"e0_method": "fit", "smooth_px": 0.5, "denoise": "none", "smooth_px_candidates": np.array([0.5, 1.0])})
    assert "smoothing 0.5 px (chosen among 0.5, 1 px" in auto
    assert _analysis_settings({}) == ""  # a /chemistry group written by another program


def test_run_without_an_absorption_edge_reconstructs_and_reports(tiny_dataset, tmp_path, capsys):
    """Plain ptychography (one pre-edge energy): `ptyjax run` reconstructs and writes the report, and
    says that chemistry and clustering were skipped, instead of failing after the reconstruction."""
    import h5py
    import shutil

    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(sorted(tiny_dataset.glob("*.cxi"))[0], folder)
    config = tmp_path / "short.toml"
    config.write_text("[reconstruct]\nepochs = 2\n")
    out = tmp_path / "r.h5"
    assert cli.main(["run", str(folder), "-o", str(out), "--config", str(config), "--quiet"]) == 0
    assert "skipped: analyze and cluster" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert "reconstruction" in f and "chemistry" not in f
    assert (tmp_path / "r_report" / "index.html").exists()


def test_loss_trend_reads_the_last_tenth_of_the_epochs():
    """Relative fall per epoch over the last max(2, n/10) epochs: 1 % per epoch on a geometric tail."""
    from ptyjax.metrics import loss_trend

    loss = np.concatenate([np.linspace(2.0, 1.1, 10), 1.0 / 0.99 ** np.arange(10)[::-1]])  # tail falls 1 % per epoch
    fall, k = loss_trend(loss)
    assert k == 2 and fall == pytest.approx((loss[-3] - loss[-1]) / (2 * loss[-1]))
    assert fall == pytest.approx(0.01, rel=0.02)
    assert loss_trend(np.ones(40))[0] == 0.0 and loss_trend(np.ones(40))[1] == 4
    assert np.isnan(loss_trend([1.0, 0.9])[0])
