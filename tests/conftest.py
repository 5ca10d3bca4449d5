import os

# Tests run on the CPU with a fixed number of threads, and never grab all memory up front.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The command line's persistent compilation cache stays out of the user's home (its own test uses tmp).
os.environ.setdefault("PTYJAX_COMPILATION_CACHE", "off")

import pytest


@pytest.fixture
def config_rejects(tmp_path):
    """``check(section, cases)``: for each ``(text, message)`` a configuration file holding ``text`` in
    ``[section]`` fails when ``ptyjax.pipeline.load_config`` reads it, with ``message`` and the file's
    name in the error."""
    from ptyjax.errors import PtyjaxError
    from ptyjax.pipeline import load_config

    def check(section, cases):
        for text, message in cases:
            bad = tmp_path / "bad.toml"
            bad.write_text(f"[{section}]\n{text}\n")
            with pytest.raises(PtyjaxError, match=message) as error:
                load_config(bad)
            assert str(bad) in str(error.value)

    return check


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """The tiny preset simulated once per test session: the folder of CXI files (+ truth.h5).

    Tests must treat it as read-only (results go to their own tmp_path).
    """
    from ptyjax.simulate import PRESETS, simulate

    out = tmp_path_factory.mktemp("tiny")
    simulate(PRESETS["tiny"], out)
    return out


@pytest.fixture(scope="session")
def tiny_four_energies(tmp_path_factory):
    """The tiny preset at four energies (two per edge), simulated once: for the slower multi-run tests."""
    from ptyjax.simulate import PRESETS, simulate

    out = tmp_path_factory.mktemp("tiny4")
    simulate(PRESETS["tiny"].replace(energies_ev=(6535.0, 6551.0, 8330.0, 8344.5)), out)
    return out
