"""The persistent compilation cache: compiled programs land on disk and are found again."""

import os

import jax
import jax.numpy as jnp
import pytest

from ptyjax import compilation_cache


@pytest.fixture
def restore_jax_cache():
    saved = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])


def test_compiled_programs_are_stored_and_reused(tmp_path, restore_jax_cache, monkeypatch):
    monkeypatch.delenv(compilation_cache.ENV, raising=False)
    folder = compilation_cache.enable(tmp_path / "xla")
    assert folder == tmp_path / "xla" and jax.config.jax_compilation_cache_dir == str(folder)
    # Store even this quick program (by default only those that took over a second).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.jit(lambda x: jnp.fft.fft2(x) * 3.25)(jnp.ones((8, 8)))
    assert os.listdir(folder), "nothing written to the cache folder"
    # The same program from a new function object (as in a new process): loaded from the folder.
    events = []
    jax.monitoring.register_event_listener(lambda name, **kwargs: events.append(name))
    jax.jit(lambda x: jnp.fft.fft2(x) * 3.25)(jnp.ones((8, 8)))
    assert "/jax/compilation_cache/cache_hits" in events


def test_environment_chooses_or_disables_the_folder(tmp_path, restore_jax_cache, monkeypatch):
    monkeypatch.setenv(compilation_cache.ENV, "off")
    assert compilation_cache.enable() is None
    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "here"))
    assert compilation_cache.enable() == tmp_path / "here" and (tmp_path / "here").is_dir()
    monkeypatch.delenv(compilation_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    jax.config.update("jax_compilation_cache_dir", None)
    assert compilation_cache.enable() == tmp_path / "xdg" / "ptyjax" / "xla"


def test_unusable_folder_warns_and_runs_without_cache(tmp_path, restore_jax_cache):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="not usable"):
        assert compilation_cache.enable(blocker / "xla") is None


def test_command_line_turns_the_cache_on(tmp_path, restore_jax_cache, monkeypatch, capsys):
    from ptyjax.cli import main

    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "cli"))
    assert main(["config", "--defaults"]) == 0
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cli")
