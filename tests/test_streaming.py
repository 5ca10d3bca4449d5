"""Streaming frames from the CXI files per minibatch (larger-than-memory datasets)."""

import numpy as np
import pytest

from ptyjax import fit
from ptyjax.cli import main
from ptyjax.data import Dataset
from ptyjax.streaming import StreamedFrames, mean_patterns

# The tiny preset's true defocus: fixed so that both fits skip the (identical) defocus search.
DEFOCUS_M = 270e-6


@pytest.fixture(scope="module")
def data(tiny_four_energies):
    return tiny_four_energies


def test_batches_are_the_in_memory_frames(data):
    dataset = Dataset.open(data)
    memory = fit.prepare(dataset)
    streamed = fit.prepare(dataset, stream=True)
    assert isinstance(streamed.frames, StreamedFrames) and streamed.frames.shape == memory.frames.shape
    rng = np.random.default_rng(1)
    indices = rng.integers(0, memory.frames.shape[1], (len(dataset), 7))
    indices[:, 0] = indices[:, 1]  # repeated points read twice
    expected = np.asarray(memory.batch_frames(indices))
    np.testing.assert_array_equal(np.asarray(streamed.batch_frames(indices)), expected)
    # A prefetched batch is the same batch, collected from the background thread.
    streamed.frames.prefetch(indices)
    assert len(streamed.frames._pending) == 1
    np.testing.assert_array_equal(np.asarray(streamed.batch_frames(indices)), expected)
    assert not streamed.frames._pending
    # Chunked mean patterns equal the in-memory mean (float32 round-off only).
    np.testing.assert_allclose(streamed.mean_patterns, memory.mean_patterns, rtol=1e-5, atol=1e-6 * memory.mean_patterns.max())


def test_padding_points_and_views(data):
    dataset = Dataset.open(data)
    frames = StreamedFrames(dataset.scans, dataset.n_frames.max() + 2)
    pad = dataset.n_frames[0]
    batch = frames.read(np.full((len(dataset), 2), pad))
    assert batch.shape[:2] == (len(dataset), 2) and not batch.any()  # beyond a scan: zero frames
    view = frames[np.array([2])][:, :5]
    assert view.shape == (1, 5) + dataset.frame_shape
    np.testing.assert_array_equal(view.read(np.array([[3]])), dataset.scans[2].read_frames([3])[None])


def test_streaming_never_loads_a_whole_scan(data, monkeypatch):
    def refuse(*args):
        raise AssertionError("load_all called while streaming")

    monkeypatch.setattr(Dataset, "load_all", refuse)
    dataset = Dataset.open(data)
    problem = fit.prepare(dataset, stream=True)
    assert problem.mean_patterns.shape == (len(dataset),) + dataset.frame_shape
    np.testing.assert_allclose(mean_patterns(dataset), problem.mean_patterns)


def test_streamed_fit_equals_in_memory_fit(data):
    dataset = Dataset.open(data)
    config = fit.FitConfig(epochs=3, batch_size=8, defocus_m=DEFOCUS_M, checkpoint_every=0)
    memory = fit.reconstruct(dataset, config, progress=False)
    streamed = fit.reconstruct(dataset, config, progress=False, stream=True)
    # Same frames, same batches; only the mean pattern (probe start) differs by float32 round-off.
    np.testing.assert_allclose(streamed.loss_history, memory.loss_history, rtol=1e-5)
    scale = np.abs(memory.object()).max()
    np.testing.assert_allclose(streamed.object(), memory.object(), rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(streamed.probe(), memory.probe(), rtol=0, atol=1e-4 * np.abs(memory.probe()).max())
    assert np.max(np.abs(memory.object() - 1)) > 100 * 1e-4 * scale  # the fit moved far beyond the tolerance


def test_cli_stream(data, tmp_path):
    out = tmp_path / "r.h5"
    code = main(["reconstruct", str(data), "-o", str(out), "--epochs", "1", "--defocus", str(DEFOCUS_M), "--stream", "--quiet"])
    assert code == 0 and out.exists()
