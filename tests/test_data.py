"""ptyjax.data: lazy CXI reading, both translation layouts, dark/mask handling, edge grouping, validation.

Files are written here directly with h5py (as PyNX, PtyPy or CDTools would), not with ptyjax's writer,
except in the explicit round-trip test.
"""

import h5py
import numpy as np
import pytest

from ptyjax import data as data_module
from ptyjax.cxi import write_cxi
from ptyjax.data import Dataset, ScanFile, group_by_edge
from ptyjax.errors import DataError, PtyjaxError

# CODATA 2018 values, written out here so the tests do not reuse the code under test.
EV = 1.602176634e-19  # J
HC = 1.239841984e-6  # eV m

N_FRAMES, NY, NX = 7, 8, 8
DISTANCE_M = 1.5
PIXEL_M = 75e-6


def make_frames(seed=0, n=N_FRAMES):
    return np.random.default_rng(seed).poisson(20.0, (n, NY, NX)).astype(np.uint32)


def make_translation(seed=0, n=N_FRAMES):
    """(N, 3) sample translation (x, y, z) in metres."""
    t = np.random.default_rng(seed + 100).uniform(-2e-6, 2e-6, (n, 3))
    t[:, 2] = 0.0
    return t


def write_raw_cxi(
    path,
    frames=None,
    translation=None,
    energy_j=6539.0 * EV,
    distance_m=DISTANCE_M,
    pixel_m=(PIXEL_M, PIXEL_M),
    layout="N3",
    paths="instrument",
    mask=None,
    dark=None,
    monitor=None,
    skip=(),
):
    """A CXI file written with plain h5py. ``layout``: "N3" (CDTools/PtyPy) or "3N" (PyNX);
    ``paths``: "instrument" (detector_1/data, sample_1/geometry_1/translation) or "data_1"."""
    frames = make_frames() if frames is None else frames
    translation = make_translation(n=len(frames)) if translation is None else translation
    if layout == "3N":
        translation = translation.T
    det = "entry_1/instrument_1/detector_1"
    data_path, trans_path = (
        (f"{det}/data", "entry_1/sample_1/geometry_1/translation")
        if paths == "instrument"
        else ("entry_1/data_1/data", "entry_1/data_1/translation")
    )
    with h5py.File(path, "w") as f:
        items = {
            data_path: frames,
            trans_path: translation,
            "entry_1/instrument_1/source_1/energy": energy_j,
            f"{det}/distance": distance_m,
            f"{det}/y_pixel_size": pixel_m[0],
            f"{det}/x_pixel_size": pixel_m[1],
            f"{det}/mask": mask,
            f"{det}/dark": dark,
            "entry_1/data_1/monitor": monitor,
        }
        for name, value in items.items():
            if value is not None and name not in skip:
                f[name] = value
    return path


# --- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout,paths", [("3N", "instrument"), ("N3", "data_1"), ("3N", "data_1")])
def test_layouts_read_identically(tmp_path, layout, paths):
    reference = ScanFile.open(write_raw_cxi(tmp_path / "ref.cxi"))
    other = ScanFile.open(write_raw_cxi(tmp_path / "other.cxi", layout=layout, paths=paths))
    np.testing.assert_array_equal(other.probe_positions_m, reference.probe_positions_m)
    np.testing.assert_array_equal(other.read_frames(np.arange(N_FRAMES)), reference.read_frames(np.arange(N_FRAMES)))
    assert (other.energy_ev, other.n_frames, other.frame_shape) == (reference.energy_ev, N_FRAMES, (NY, NX))


def test_energy_joules_to_ev_and_positions_are_minus_translation(tmp_path):
    translation = make_translation()
    scan = ScanFile.open(write_raw_cxi(tmp_path / "a.cxi", translation=translation, energy_j=8333.0 * EV))
    assert scan.energy_ev == pytest.approx(8333.0, rel=1e-12)
    # (y, x) probe position = -(t_y, t_x); CXI columns are (x, y, z).
    np.testing.assert_array_equal(scan.probe_positions_m[:, 0], -translation[:, 1])
    np.testing.assert_array_equal(scan.probe_positions_m[:, 1], -translation[:, 0])
    extent = translation[:, :2].max(axis=0) - translation[:, :2].min(axis=0)
    np.testing.assert_allclose(scan.scan_extent_m, extent[::-1], rtol=1e-12)
    assert scan.distance_m == DISTANCE_M and scan.detector_pixel_m == (PIXEL_M, PIXEL_M)
    assert not scan.has_dark and not scan.has_monitor and not scan.bad_pixels.any()


def test_real_space_pixel_size(tmp_path):
    scan = ScanFile.open(write_raw_cxi(tmp_path / "a.cxi", energy_j=6539.0 * EV))
    expected = HC / 6539.0 * DISTANCE_M / (NX * PIXEL_M)  # lambda z / (N p), about 0.47 um here
    np.testing.assert_allclose(scan.pixel_size_m, [expected, expected], rtol=1e-12)


def test_read_frames_is_lazy_slicing(tmp_path):
    frames = make_frames()
    scan = ScanFile.open(write_raw_cxi(tmp_path / "a.cxi", frames=frames))
    # The scan object holds metadata only: no array as large as the frames.
    assert all(np.size(v) < frames.size for v in vars(scan).values() if isinstance(v, np.ndarray))
    out = scan.read_frames([5, 2])
    assert out.dtype == np.float32 and out.shape == (2, NY, NX)
    np.testing.assert_array_equal(out, frames[[5, 2]])
    np.testing.assert_array_equal(scan.read_frames([3, 3]), frames[[3, 3]])
    chunks = list(scan.iter_chunks(3))
    assert [start for start, _ in chunks] == [0, 3, 6]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), frames)
    assert scan.total_counts() == pytest.approx(frames.sum(dtype=np.float64), rel=1e-12)


def test_dark_subtracted_and_clipped_monitor_exposed(tmp_path):
    frames = make_frames()
    dark = np.full((NY, NX), 20.0, dtype=np.float32)
    monitor = np.linspace(1.0, 2.0, N_FRAMES)
    scan = ScanFile.open(write_raw_cxi(tmp_path / "a.cxi", frames=frames, dark=dark, monitor=monitor))
    expected = np.maximum(frames.astype(np.float64) - 20.0, 0.0)
    assert scan.has_dark and scan.has_monitor
    np.testing.assert_array_equal(scan.read_frames([0, 4]), expected[[0, 4]])  # not monitor-normalised
    np.testing.assert_array_equal(scan.monitor, monitor)
    assert scan.total_counts() == pytest.approx(expected.sum(), rel=1e-12)


def test_mask_marks_bad_pixels_and_excludes_them(tmp_path):
    frames = make_frames().astype(np.float32)
    mask = np.zeros((NY, NX), dtype=np.uint8)
    mask[1, 2] = 1
    mask[5, 5] = 7  # any non-zero value is bad
    frames[:, 1, 2] = -1.0  # detector gap marker: allowed in a masked pixel
    frames[3, 5, 5] = np.nan
    scan = ScanFile.open(write_raw_cxi(tmp_path / "a.cxi", frames=frames, mask=mask))
    np.testing.assert_array_equal(scan.bad_pixels, mask != 0)
    out = scan.read_frames(np.arange(N_FRAMES))
    assert np.all(out[:, mask != 0] == 0) and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[:, mask == 0], frames[:, mask == 0])
    assert scan.total_counts() == pytest.approx(frames[:, mask == 0].sum(dtype=np.float64), rel=1e-12)


def test_round_trip_with_ptyjax_writer(tmp_path):
    frames = make_frames()
    positions = np.random.default_rng(1).uniform(-1e-6, 1e-6, (N_FRAMES, 2))
    mask = np.zeros((NY, NX), bool)
    mask[0, 0] = True
    write_cxi(tmp_path / "w.cxi", frames, positions, 6550.0, DISTANCE_M, (PIXEL_M, 2 * PIXEL_M), mask=mask)
    scan = ScanFile.open(tmp_path / "w.cxi")
    assert scan.energy_ev == pytest.approx(6550.0, rel=1e-12)
    assert scan.detector_pixel_m == (PIXEL_M, 2 * PIXEL_M)
    np.testing.assert_allclose(scan.probe_positions_m, positions, rtol=0, atol=1e-20)
    np.testing.assert_array_equal(scan.bad_pixels, mask)
    np.testing.assert_array_equal(scan.read_frames([6, 0])[:, 1:, 1:], frames[[6, 0]][:, 1:, 1:])


def test_first_bad_frame_found_across_chunks(tmp_path, monkeypatch):
    frames = make_frames().astype(np.float32)
    frames[5, 2, 3] = np.inf
    frames[6, 0, 0] = np.nan
    path = write_raw_cxi(tmp_path / "a.cxi", frames=frames)
    monkeypatch.setattr(data_module, "CHUNK_BYTES", 2 * 4 * NY * NX)  # two frames per chunk
    with pytest.raises(DataError, match="non-finite counts .* frame 5 "):
        ScanFile.open(path)


# --- multi-energy dataset ------------------------------------------------------------------------


def test_group_by_edge_mn_and_ni():
    energies = [6480.0, 6539.0, 6600.0, 6830.0, 7000.0, 8300.0, 8333.0, 8500.0]
    # Mn K 6539 eV, Ni K 8333 eV (xraydb); window -100/+300 eV; 7000 eV fits no 3d-metal K edge
    # (Mn ends 6839, Fe K 7112 starts 7012).
    assert group_by_edge(energies) == {"Mn_K": [0, 1, 2, 3], "none": [4], "Ni_K": [5, 6, 7]}
    assert group_by_edge(energies, edges=["Ni_K"]) == {"Ni_K": [5, 6, 7], "none": [0, 1, 2, 3, 4]}


def test_dataset_sorted_by_energy_with_edges_and_batches(tmp_path):
    energies = [8340.0, 6530.0, 6545.0, 8320.0]  # file names out of energy order
    for i, energy in enumerate(energies):
        write_raw_cxi(tmp_path / f"scan{i}.cxi", frames=make_frames(seed=i), energy_j=energy * EV)
    ds = Dataset.open(tmp_path)
    np.testing.assert_allclose(ds.energies_ev, sorted(energies), rtol=1e-12)
    assert ds.edges == {"Mn_K": [0, 1], "Ni_K": [2, 3]}
    assert [p.name for p in ds.files] == ["scan1.cxi", "scan2.cxi", "scan3.cxi", "scan0.cxi"]
    np.testing.assert_allclose(ds.pixel_sizes_m, HC / ds.energies_ev * DISTANCE_M / (NX * PIXEL_M), rtol=1e-12)

    frames = make_frames(seed=2)  # energy index 1 is scan2
    batches = list(ds.iter_batches(1, 3, shuffle=True, rng=0))
    assert [len(i) for i, _ in batches] == [3, 3, 1]
    seen = np.concatenate([i for i, _ in batches])
    assert sorted(seen) == list(range(N_FRAMES)) and not np.array_equal(seen, np.arange(N_FRAMES))
    for indices, batch in batches:
        np.testing.assert_array_equal(batch, frames[indices])
    assert [len(i) for i, _ in ds.iter_batches(1, 3, drop_last=True)] == [3, 3]
    np.testing.assert_array_equal(ds.load_all(1), frames)


def test_dataset_accepts_list_of_files_and_folders(tmp_path):
    (tmp_path / "d").mkdir()
    write_raw_cxi(tmp_path / "d" / "a.cxi", energy_j=6540.0 * EV)
    write_raw_cxi(tmp_path / "b.cxi", energy_j=6550.0 * EV)
    ds = Dataset.open([tmp_path / "b.cxi", str(tmp_path / "d")])
    np.testing.assert_allclose(ds.energies_ev, [6540.0, 6550.0], rtol=1e-12)


def test_non_square_pixels_rejected(tmp_path):
    write_raw_cxi(tmp_path / "a.cxi", pixel_m=(PIXEL_M, 2 * PIXEL_M))
    with pytest.raises(DataError, match="a.cxi.*non-square"):
        Dataset.open(tmp_path)


def test_rectangular_frames_are_padded_square_with_masked_pixels(tmp_path):
    """A 6 x 8 detector (square pixels) reads as 8 x 8 frames: zero frequency (index m // 2) moved to
    n // 2, the padding rows bad, a bad pixel and the dark frame kept in place, the real-space pixel
    lambda z / (8 p) in both directions; the counts are those of the stored frames."""
    frames = make_frames()[:, 1:7, :]  # (7, 6, 8)
    frames[:, 3, 4] = 1000  # zero frequency of the stored frames
    mask = np.zeros((6, 8), np.uint8)
    mask[0, 1] = 1
    dark = np.full((6, 8), 2.0)
    scan = ScanFile.open(write_raw_cxi(tmp_path / "a.cxi", frames=frames, mask=mask, dark=dark))
    assert scan.frame_shape == (8, 8) and scan.detector_shape == (6, 8)
    read = scan.read_frames(np.arange(N_FRAMES))
    assert read.shape == (N_FRAMES, 8, 8)
    np.testing.assert_array_equal(read[:, 4, 4], 998.0)
    np.testing.assert_array_equal(read[:, 1:7][:, mask == 0], np.maximum(frames - 2.0, 0)[:, mask == 0])
    expected_bad = np.ones((8, 8), bool)
    expected_bad[1:7] = mask != 0
    np.testing.assert_array_equal(scan.bad_pixels, expected_bad)
    assert np.all(read[:, expected_bad] == 0)
    np.testing.assert_array_equal(np.concatenate([c for _, c in scan.iter_chunks(3)]), read)
    wavelength = HC / 6539.0
    np.testing.assert_allclose(scan.pixel_size_m, wavelength * DISTANCE_M / (8 * PIXEL_M), rtol=1e-9)
    assert scan.total_counts() == pytest.approx(np.maximum(frames - 2.0, 0)[:, mask == 0].sum())
    # Rectangular frames of the other orientation are another detector geometry.
    write_raw_cxi(tmp_path / "b.cxi", frames=np.swapaxes(frames, 1, 2), energy_j=6550.0 * EV)
    with pytest.raises(DataError, match="b.cxi.*frame shape"):
        Dataset.open(tmp_path)


def test_centred_frames_pass_the_centring_check_with_a_beamstop(tmp_path):
    """The centring check accepts a centred far-field pattern whose direct beam is masked (a
    beamstop over the central 2 x 2 pixels) and rejects the same frames in FFT order."""
    y, x = np.indices((NY, NX)) - np.array([NY // 2, NX // 2])[:, None, None]
    frames = np.random.default_rng(1).poisson(np.broadcast_to(500.0 / (1.0 + x**2 + y**2), (N_FRAMES, NY, NX)))
    beamstop = np.zeros((NY, NX), np.uint8)
    beamstop[3:5, 3:5] = 1
    ScanFile.open(write_raw_cxi(tmp_path / "centred.cxi", frames=frames, mask=beamstop))
    with pytest.raises(DataError, match="shifted.cxi.*not centred"):
        ScanFile.open(write_raw_cxi(tmp_path / "shifted.cxi", frames=np.fft.ifftshift(frames, axes=(1, 2)), mask=np.fft.ifftshift(beamstop)))


def test_integer_maximum_marks_gaps_and_fails_where_intermittent(tmp_path):
    """Detectors mark gaps and dead pixels with the type's maximum: a uint16 column at 65535 in every
    frame is masked (read as 0, left out of the counts); a pixel at 65535 in some frames only fails,
    naming it."""
    frames = make_frames().astype(np.uint16)
    frames[:, :, 5] = 65535
    scan = ScanFile.open(write_raw_cxi(tmp_path / "gap.cxi", frames=frames))
    assert scan.bad_pixels[:, 5].all() and scan.bad_pixels.sum() == NY
    np.testing.assert_array_equal(scan.read_frames(np.arange(N_FRAMES))[:, :, 5], 0.0)
    assert scan.total_counts() == pytest.approx(np.delete(frames, 5, axis=2).sum(dtype=np.float64))
    frames[2:4, 1, 2] = 65535
    with pytest.raises(DataError, match=r"flagged.cxi.*1 pixels read 65535 .* pixel \(row 1, column 2\) in 2 of 7 frames"):
        ScanFile.open(write_raw_cxi(tmp_path / "flagged.cxi", frames=frames))


def test_energy_written_in_ev_rejected(tmp_path):
    path = write_raw_cxi(tmp_path / "a.cxi", energy_j=6539.0)
    with pytest.raises(DataError, match="source_1/energy.*joules"):
        ScanFile.open(path)


def test_three_frames_read_as_cxi_standard_layout(tmp_path):
    # With N == 3 both (N, 3) and (3, N) match: the CXI standard (N, 3) is the documented choice.
    translation = make_translation(n=3)
    scan = ScanFile.open(write_raw_cxi(tmp_path / "a.cxi", frames=make_frames(n=3), translation=translation))
    np.testing.assert_array_equal(scan.probe_positions_m, -translation[:, [1, 0]])


def test_unknown_edge_name_rejected():
    with pytest.raises(PtyjaxError, match="unknown absorption edge 'Mn_Q'"):
        group_by_edge([6539.0], edges=["Mn_Q"])
