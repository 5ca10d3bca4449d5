"""Plugins: the README's prior example run as a plugin from the CLI, and clear errors for bad plugins."""

import re
from pathlib import Path

import numpy as np
import pytest

from ptyjax import plugins, priors, recipes, results
from ptyjax.cli import main
from ptyjax.model import LogObjectStack

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_prior_example() -> str:
    """The one ```python block of README.md that registers the ``object_tv`` prior."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if '@priors.register("object_tv")' in b]
    assert len(found) == 1, "README.md must show exactly one object_tv prior example"
    return found[0]


@pytest.fixture(scope="module")
def tiny(tiny_dataset):
    return tiny_dataset


def test_readme_prior_example_is_short():
    # The promise: a complete new prior in under 20 lines.
    assert len(readme_prior_example().strip().splitlines()) < 20


def test_readme_prior_example_runs_as_a_plugin(tiny, tmp_path):
    plugin = tmp_path / "object_tv.py"
    plugin.write_text(readme_prior_example())
    out = tmp_path / "results.h5"
    code = main(["reconstruct", str(tiny), "-o", str(out), "--plugin", str(plugin), "--prior", "object_tv=0.1",
                 "--epochs", "2", "--batch", "18", "--defocus", "2.7e-4", "--checkpoint-every", "0", "--quiet"])
    assert code == 0
    config = results.read_config(out)["reconstruction"]
    # The prior is added to the recipe's (default: joint-smooth) and the plugin is recorded.
    assert config["priors"]["object_tv"] == {"weight": 0.1}
    assert "spectral_smoothness" in config["priors"]
    assert config["plugins"] == [str(plugin)]
    rec = results.read_group(out, "reconstruction")
    assert np.all(np.isfinite(rec["loss"])) and rec["loss"][-1] < rec["loss"][0]
    # The registered function is the README's: total variation, zero for a flat object, positive otherwise.
    tv = priors.get("object_tv")
    flat = LogObjectStack.ones(2, (8, 8))
    ramp = LogObjectStack(flat.log_amplitude, flat.phase + np.arange(8, dtype=np.float32))
    context = priors.PriorContext((7000.0, 7001.0), (8, 8))
    params = type("Params", (), {})

    def value(stack):
        params.object = stack
        return float(tv(params, context, weight=1.0))

    # A phase ramp of 1 rad per pixel along x: |grad| = 1 on the 7 x 7 interior of each of 2 images.
    assert value(flat) == pytest.approx(0.0, abs=1e-4)
    assert value(ramp) == pytest.approx(2 * 7 * 7 / (2 * 8 * 8), rel=1e-4)


def test_missing_and_broken_plugins_are_one_line_errors(tiny, tmp_path, capsys):
    args = ["reconstruct", str(tiny), "-o", str(tmp_path / "r.h5"), "--epochs", "1", "--quiet"]
    assert main(args + ["--plugin", str(tmp_path / "nope.py")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.py" in err and "does not exist" in err
    broken = tmp_path / "broken.py"
    broken.write_text("import jax\n\nraise RuntimeError('oops')\n")
    assert main(args + ["--plugin", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.py" in err and "line 3" in err and "oops" in err
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def f(:\n")
    assert main(args + ["--plugin", str(syntax)]) == 2
    assert "line 1" in capsys.readouterr().err
    # `ptyjax run` loads plugins the same way.
    assert main(["run", str(tiny), "-o", str(tmp_path / "p.h5"), "--quiet", "--plugin", str(broken)]) == 2
    assert "broken.py" in capsys.readouterr().err


@pytest.mark.parametrize("prior, message", [("no_such_prior=1", "unknown prior"), ("spectral_smoothness", "NAME=WEIGHT"),
                                            ("spectral_smoothness=abc", "NAME=WEIGHT")])
def test_bad_prior_options_are_errors(tiny, tmp_path, capsys, prior, message):
    code = main(["reconstruct", str(tiny), "-o", str(tmp_path / "r.h5"), "--prior", prior, "--quiet"])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r.h5").exists()


def test_plugin_registers_a_recipe_listed_by_models(tmp_path, capsys):
    plugin = tmp_path / "my_recipes.py"
    plugin.write_text('from ptyjax import recipes\n\nrecipes.register("smooth-strong", {"priors": {"spectral_smoothness": '
                      '{"weight": 5.0}}}, "joint, five times the default smoothness")\n')
    try:
        assert main(["models", "--plugin", str(plugin)]) == 0
        listing = capsys.readouterr().out
        assert re.search(r"^smooth-strong +joint, five times the default smoothness$", listing, flags=re.M)
        assert recipes.fit_config("smooth-strong").priors == {"spectral_smoothness": {"weight": 5.0}}
        # Loading the same file again does not run it twice.
        assert plugins.load(plugin) is plugins.load(plugin)
    finally:
        recipes.REGISTERED.pop("smooth-strong", None)
