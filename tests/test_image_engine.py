"""The second kind of shear engine: whole image in, one catalogue per metacal version out.

A toy image engine, registered through ``blendflag_register_shear_engines``
like any third-party plugin, runs through the same pipeline stages and
statistics as the stamp engines; nothing in the core asks which kind it is.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from blendflag import hookimpl
from blendflag.config import PipelineConfig
from blendflag.pipeline.stages import Context, run_pipeline
from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine
from blendflag.shear.catalogues import VersionCatalogues
from blendflag.shear.engine import ImageShearEngine
from blendflag.shear.results import METACAL_VERSIONS, VERSION_SHEARS

STEP = 0.01
TRUE_G1 = 0.02
RESPONSE = 0.8


def _catalogue(e1, e2, flags=None):
    n = len(e1)
    return Table(
        {
            "X_IMAGE": np.arange(n, dtype=float) + 1,
            "Y_IMAGE": np.ones(n),
            "G1": np.asarray(e1, dtype=float),
            "G2": np.asarray(e2, dtype=float),
            "MCAL_FLAGS": np.zeros(n, dtype=np.int32) if flags is None else flags,
        }
    )


class ToyImageEngine(ImageShearEngine):
    """Each version detects a different number of objects (as metadetection does)."""

    name = "toy_image"
    priority = 1000

    def measure_image(self, image, weight, psf, pixel_scale, noise_sigma, rng):
        tables, units = {}, {}
        galaxies = rng.normal(0.0, 0.2, size=(410, 2))
        galaxies[:400] -= galaxies[:400].mean(axis=0)  # no shape noise left in the mean
        galaxies[400:] = 0.0
        for k, version in enumerate(METACAL_VERSIONS):
            n = 400 + k  # each version detects a few objects more, of no shape
            shape = galaxies[:n]
            d1, d2 = VERSION_SHEARS[version]
            e1 = shape[:, 0] + RESPONSE * (TRUE_G1 + d1 * STEP)
            e2 = shape[:, 1] + RESPONSE * d2 * STEP
            tables[version] = _catalogue(e1, e2)
            units[version] = np.arange(n) % 20  # 20 cells
        return VersionCatalogues(tables=tables, units=units, engine=self.name, step=self.step)


class ToyPlugin:
    @hookimpl
    def blendflag_register_shear_engines(self):
        return [ToyImageEngine]


@pytest.fixture
def pm():
    return get_plugin_manager(extra_plugins=[("toy_image_engine", ToyPlugin())])


def test_auto_picks_the_image_engine_by_priority(pm):
    assert select_engine(get_shear_engines(pm), "auto") is ToyImageEngine


def test_image_engine_runs_through_the_pipeline_stages(pm):
    image = np.random.default_rng(2).normal(0.0, 1.0, size=(64, 64))
    detections = Table({"X_IMAGE": [20.0, 40.0], "Y_IMAGE": [20.0, 40.0]})
    context = Context(
        config=PipelineConfig(),
        pm=pm,
        image=image,
        psf=np.ones((5, 5)),
        table=detections,
        shear_engine="toy_image",
        noise_sigma=1.0,
        pixel_scale=0.2,
        true_shear=(TRUE_G1, 0.0),
        n_bootstrap=50,
    )
    run_pipeline(context)
    assert context.stamps is None  # an image engine needs no stamps
    (entry,) = context.results["selections"]
    assert entry["name"] == "all"
    assert entry["R11"] == pytest.approx(RESPONSE, rel=1e-9)
    assert entry["R11_S"] is None  # included in R for separately detected catalogues
    assert entry["g1"] == pytest.approx(TRUE_G1, rel=1e-9)
    assert entry["m"] == pytest.approx(0.0, abs=1e-9)
    assert entry["m_err"] is not None
    unit_sums = context.results["unit_sums"]["all"]
    sums, n_good = unit_sums.sums, unit_sums.n_good
    assert sums.shape == (20, 15) and n_good == 400
    # the catalogue gets the engine's cards, not columns of another row set
    assert not any(c.startswith("G1_") for c in context.annotation.columns)
    assert ("BF_MCENG", "toy_image", "metacalibration engine") in context.annotation.cards


def test_a_cut_on_each_sheared_catalogue_enters_the_response():
    """A cut on a sheared quantity, applied to each version, changes R; a fixed cut does not."""
    rng = np.random.default_rng(5)
    engine = ToyImageEngine()
    result = engine.measure_image(None, None, None, 0.2, 1.0, rng)
    everything = {v: np.ones(len(t), bool) for v, t in result.tables.items()}
    cut = {v: np.asarray(t["G1"]) < 0.1 for v, t in result.tables.items()}
    sums_all, _ = result.unit_sums(everything)
    sums_cut, _ = result.unit_sums(cut)
    from blendflag.shear.statistics import statistics_from_sums

    r_all = statistics_from_sums("all", sums_all, 400, STEP, layout="versions")["R11"]
    r_cut = statistics_from_sums("cut", sums_cut, 400, STEP, layout="versions")["R11"]
    assert r_all == pytest.approx(RESPONSE)
    # the cut moves with the shear of each version: it removes more of 1p than of 1m
    assert r_cut < r_all - 0.05
    fixed = {v: np.arange(len(t)) % 2 == 0 for v, t in result.tables.items()}
    sums_fixed, _ = result.unit_sums(fixed)
    r_fixed = statistics_from_sums("fixed", sums_fixed, 400, STEP, layout="versions")["R11"]
    assert r_fixed == pytest.approx(RESPONSE)
