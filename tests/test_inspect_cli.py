"""``ptyjax inspect``: summaries, and one clear line plus exit status 2 for every kind of bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptyjax.cli import main
from test_data import EV, NX, NY, make_frames, make_translation, write_raw_cxi


def ptyjax_executable():
    """The installed ``ptyjax`` console script of this interpreter's environment."""
    local = Path(sys.executable).with_name("ptyjax")
    return str(local) if local.exists() else shutil.which("ptyjax")


def test_inspect_table(tmp_path, capsys):
    mask = np.zeros((NY, NX), bool)
    mask[0, :3] = True
    write_raw_cxi(tmp_path / "mn.cxi", energy_j=6545.0 * EV, mask=mask)
    write_raw_cxi(tmp_path / "ni.cxi", energy_j=8340.0 * EV, monitor=np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.5]) * 2e4)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Mn_K (1), Ni_K (1)" in out
    assert "monitor in 1 of 2 files: frame flux 0.5-1.5 x each scan's mean" in out
    rows = [line.split() for line in out.splitlines() if line.endswith(".cxi")]
    assert [(r[1], r[2], r[3], r[7]) for r in rows] == [("6545.00", "Mn_K", "7", "3"), ("8340.00", "Ni_K", "7", "0")]


def test_inspect_json_entry_point(tmp_path):
    write_raw_cxi(tmp_path / "a.cxi", energy_j=6539.0 * EV, frames=make_frames(n=5), translation=make_translation(n=5))
    write_raw_cxi(tmp_path / "b.cxi", energy_j=8333.0 * EV, layout="3N", paths="data_1")
    proc = subprocess.run([ptyjax_executable(), "inspect", "--json", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    np.testing.assert_allclose(info["energies_ev"], [6539.0, 8333.0], rtol=1e-12)
    assert info["n_frames"] == [5, 7] and info["frame_shape"] == [NY, NX]
    assert info["edges"] == {"Mn_K": [0], "Ni_K": [1]}
    assert info["masked_pixels"] == [0, 0] and len(info["scan_extent_m"]) == 2
    assert info["relative_flux_range"] == [None, None]
    assert info["total_counts"][0] == pytest.approx(make_frames(n=5).sum(dtype=np.float64), rel=1e-12)


def test_debug_shows_traceback(tmp_path):
    (tmp_path / "junk.cxi").write_text("not hdf5")
    proc = subprocess.run([ptyjax_executable(), "--debug", "inspect", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "DataError" in proc.stderr and "junk.cxi" in proc.stderr


def _frames_with(value, frame):
    frames = make_frames().astype(np.float32)
    frames[frame, 2, 3] = value
    return frames


def _truncated(path):
    write_raw_cxi(path, frames=make_frames(n=200), translation=make_translation(n=200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _airy_frames(fft_order=False):
    """Frames of a centred far-field disc (an aperture's Fraunhofer pattern), or in FFT order."""
    y, x = np.indices((NY, NX)) - np.array([NY // 2, NX // 2])[:, None, None]
    disc = 1000.0 * np.exp(-(x**2 + y**2) / 4.0) + 1.0
    frames = np.random.default_rng(0).poisson(np.broadcast_to(disc, (7, NY, NX))).astype(np.float32)
    return np.fft.ifftshift(frames, axes=(1, 2)) if fft_order else frames


def _write_pair(folder, second_energy_ev=6550.0, **second):
    write_raw_cxi(folder / "first.cxi", energy_j=6539.0 * EV)
    write_raw_cxi(folder / "second.cxi", energy_j=second_energy_ev * EV, **second)


# Each case: (name, writer of the bad input into a folder, file named in the message, problem text).
BAD_INPUTS = [
    ("missing path", lambda d: write_raw_cxi(d / "bad.cxi", skip=("entry_1/instrument_1/detector_1/distance",)),
     "bad.cxi", "missing required dataset /entry_1/instrument_1/detector_1/distance"),
    ("shape mismatch", lambda d: write_raw_cxi(d / "bad.cxi", translation=make_translation(n=6)),
     "bad.cxi", "shape mismatch: /entry_1/sample_1/geometry_1/translation has shape (6, 3)"),
    ("nan counts", lambda d: write_raw_cxi(d / "bad.cxi", frames=_frames_with(np.nan, 4)),
     "bad.cxi", "non-finite counts (NaN or inf) in frame 4"),
    ("negative counts", lambda d: write_raw_cxi(d / "bad.cxi", frames=_frames_with(-3.0, 2)),
     "bad.cxi", "negative counts in frame 2"),
    ("frames in FFT order", lambda d: write_raw_cxi(d / "bad.cxi", frames=_airy_frames(fft_order=True)),
     "bad.cxi", "the frames are not centred on the zero frequency"),
    ("translations in micrometres", lambda d: write_raw_cxi(d / "bad.cxi", translation=make_translation() * 1e6),
     "bad.cxi", "translation: neighbouring positions are"),
    ("distance in millimetres", lambda d: write_raw_cxi(d / "bad.cxi", distance_m=1500.0),
     "bad.cxi", "so the positions nearly coincide"),
    ("wrong mask shape", lambda d: write_raw_cxi(d / "bad.cxi", mask=np.zeros((NY, NX + 1))),
     "bad.cxi", "/entry_1/instrument_1/detector_1/mask has shape (8, 9)"),
    ("zero distance", lambda d: write_raw_cxi(d / "bad.cxi", distance_m=0.0),
     "bad.cxi", "detector_1/distance must be positive"),
    ("duplicate energies", lambda d: _write_pair(d, second_energy_ev=6539.0),
     "second.cxi", "duplicate energy 6539.000 eV"),
    ("inconsistent distance", lambda d: _write_pair(d, distance_m=2.0),
     "second.cxi", "inconsistent detector geometry: detector distance"),
    ("inconsistent frame shape", lambda d: _write_pair(d, frames=np.ones((7, NY, NX + 2))),
     "second.cxi", "inconsistent detector geometry: frame shape"),
    ("bad monitor", lambda d: write_raw_cxi(d / "bad.cxi", monitor=np.zeros(7)),
     "bad.cxi", "/entry_1/data_1/monitor has non-positive or non-finite values"),
    ("truncated file", lambda d: _truncated(d / "bad.cxi"), "bad.cxi", "truncated"),
    ("not hdf5", lambda d: (d / "bad.cxi").write_text("frames,x,y\n1,2,3\n"), "bad.cxi", "cannot be read as HDF5"),
    ("empty folder", lambda d: None, "data", "contains no .cxi files"),
]


@pytest.mark.parametrize("write,filename,problem", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_one_line_exit_2(tmp_path, capsys, write, filename, problem):
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder)
    assert main(["inspect", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("ptyjax inspect: error: ")
    assert filename in err and problem in err, err


def test_simulate_then_inspect_round_trip(tmp_path, capsys):
    """`ptyjax simulate` then `ptyjax inspect --json` reports what was simulated."""
    from ptyjax.geometry import real_space_pixel_size
    from ptyjax.simulate import PRESETS

    preset = PRESETS["tiny"]
    assert main(["simulate", "--preset", "tiny", "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(report["energies_ev"], preset.energies_ev, rtol=1e-12)
    assert report["n_frames"] == [preset.n_positions] * len(preset.energies_ev)
    assert report["frame_shape"] == [preset.frame_size, preset.frame_size]
    expected = real_space_pixel_size(np.asarray(preset.energies_ev), preset.detector_distance_m, preset.detector_pixel_m, preset.frame_size)
    np.testing.assert_allclose(report["pixel_size_m"], expected, rtol=1e-9)
    assert set(report["edges"]) == {"Mn_K", "Ni_K"}
