"""Shared fixtures: small synthetic images and catalogues made with numpy only."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from astropy.io import fits

from blendflag.cli import main

#: Set by CI (``.ci/run``), where every optional package and binary is installed:
#: a skipped test is then a failure of the run, never a silent gap.
NO_SKIPS = "BLENDFLAG_NO_SKIPS"


def pytest_sessionfinish(session, exitstatus):
    """Under ``BLENDFLAG_NO_SKIPS=1`` a run that skipped any test fails (exit 1)."""
    import os

    if os.environ.get(NO_SKIPS, "") in ("", "0"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        reporter.write_line(
            f"error: {len(skipped)} tests skipped under {NO_SKIPS}=1 (something CI must "
            "install is missing): " + "; ".join(str(r.longrepr[-1]) for r in skipped[:5]),
            red=True,
        )
        session.exitstatus = 1


@pytest.fixture(autouse=True, scope="session")
def _operator_cache(tmp_path_factory):
    """Metacal operators built by tests go to a temporary cache, not the user's."""
    import os

    saved = os.environ.get("BLENDFLAG_CACHE_DIR")
    os.environ["BLENDFLAG_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if saved is None:
        os.environ.pop("BLENDFLAG_CACHE_DIR", None)
    else:
        os.environ["BLENDFLAG_CACHE_DIR"] = saved


def gaussian_image(shape, positions, flux=3000.0, sigma_px=2.0, noise=10.0, rng=None):
    """An image of round Gaussian sources plus white noise (ADU)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    ny, nx = shape
    image = rng.normal(0.0, noise, shape) if noise else np.zeros(shape)
    r = int(6 * sigma_px)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    for x, y in positions:
        x0, y0 = round(x), round(y)
        prof = np.exp(-((xx + x0 - x) ** 2 + (yy + y0 - y) ** 2) / (2 * sigma_px**2))
        prof *= flux / prof.sum()
        ys = slice(max(0, y0 - r), min(ny, y0 + r + 1))
        xs = slice(max(0, x0 - r), min(nx, x0 + r + 1))
        image[ys, xs] += prof[
            ys.start - (y0 - r) : ys.stop - (y0 - r), xs.start - (x0 - r) : xs.stop - (x0 - r)
        ]
    return image.astype(np.float32)


@pytest.fixture
def small_field(tmp_path):
    """A 256x256 image with isolated sources and two close pairs; weight map too.

    Returns a dict of paths and the true positions (0-based pixel centres).
    """
    rng = np.random.default_rng(42)
    isolated = [(40 + 45 * i, 40 + 45 * j) for i in range(4) for j in range(4)]
    pairs = [(220.0, 60.0), (225.5, 61.0), (220.0, 200.0), (226.0, 203.0)]
    positions = [(float(x), float(y)) for x, y in isolated if x < 200] + pairs
    image = gaussian_image((256, 256), positions, rng=rng)
    weight = np.full(image.shape, 1.0 / 100.0, dtype=np.float32)
    paths = {"image": tmp_path / "image.fits", "weight": tmp_path / "weight.fits"}
    header = fits.Header()
    header["GAIN"] = (1.0, "e-/ADU")
    header["OBJECT"] = "synthetic"
    fits.PrimaryHDU(image, header=header).writeto(paths["image"])
    fits.PrimaryHDU(weight).writeto(paths["weight"])
    return {**paths, "positions": positions, "tmp": tmp_path}


@pytest.fixture
def detected(small_field):
    """``small_field`` plus the FITS_LDAC catalogue written by ``detect``."""
    cat = small_field["tmp"] / "cat.fits"
    assert (
        main(
            [
                "detect",
                str(small_field["image"]),
                "--weight",
                str(small_field["weight"]),
                "--out",
                str(cat),
            ]
        )
        == 0
    )
    return {**small_field, "catalogue": cat}


def script_module(name: str):
    """``scripts/<name>.py`` imported as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_cli(args, capsys):
    """Run ``blendflag-shear`` in-process; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def install_entry_point_plugin(site, module_name, source, entry_name):
    """Make ``module_name`` a plugin found through a real ``blendflag`` entry point.

    Writes the module and a ``.dist-info`` declaring the entry point into the
    directory ``site``, which the caller puts on ``sys.path`` (``monkeypatch.syspath_prepend``).

    Parameters
    ----------
    site : pathlib.Path
        An existing directory.
    module_name : str
        Import name of the plugin module.
    source : str
        Python source of the module.
    entry_name : str
        Name of the entry point, which is the plugin's name in the manager.
    """
    import importlib

    (site / f"{module_name}.py").write_text(source)
    dist = module_name.replace("_", "-")
    info = site / f"{module_name}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[blendflag]\n{entry_name} = {module_name}\n")
    importlib.invalidate_caches()


@pytest.fixture
def third_party_plugin(tmp_path, monkeypatch):
    """Register tests/example_plugin through a real entry point (a dist-info on sys.path)."""
    import sys
    from pathlib import Path

    src = Path(__file__).parent / "example_plugin" / "blendflag_neighbours.py"
    site = tmp_path / "site"
    site.mkdir()
    install_entry_point_plugin(site, "blendflag_neighbours", src.read_text(), "neighbours")
    monkeypatch.syspath_prepend(str(site))
    yield "neighbours"
    sys.modules.pop("blendflag_neighbours", None)
