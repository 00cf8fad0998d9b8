"""The built-in metadetection engine: response, cells, selection response, choice."""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from blendflag.config import DetectConfig, FlagConfig, ShearConfig
from blendflag.errors import BlendflagError
from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine
from blendflag.shear.cells import cell_grid
from blendflag.shear.moments import FWHM_PER_SIGMA, weighted_moments
from blendflag_plugins.metadetect_engine import DEFAULTS, Metadetection

SCALE = 0.2  # arcsec / pixel
PSF = galsim.Gaussian(fwhm=0.7)
GAL_SIGMA = 0.35  # arcsec


def _psf_image():
    image = PSF.drawImage(nx=31, ny=31, scale=SCALE).array
    return image / image.sum()


def _scene(positions, shape, g1=0.0, ellipticities=None):
    """Noiseless Gaussian galaxies at 0-based pixel ``positions``, sheared by (g1, 0)."""
    image = galsim.ImageD(shape[1], shape[0], scale=SCALE)
    for k, (x, y) in enumerate(positions):
        gal = galsim.Gaussian(sigma=GAL_SIGMA, flux=1000.0)
        if ellipticities is not None:
            gal = gal.shear(g1=ellipticities[k, 0], g2=ellipticities[k, 1])
        obj = galsim.Convolve(gal.shear(g1=g1, g2=0.0), PSF)
        stamp = obj.drawImage(nx=41, ny=41, scale=SCALE, center=galsim.PositionD(x + 1, y + 1))
        bounds = stamp.bounds & image.bounds
        image[bounds] += stamp[bounds]
    return image.array


def _engine(**options):
    return Metadetection(ShearConfig(options={"metadetect": options}))


def _measure(engine, image, seed=1, noise_sigma=1e-3):
    # a tiny stated noise puts the numerical ringing of noiseless images below
    # the S/N cut; its correction field moves shapes by ~1e-6
    return engine.measure_cells(
        image, None, _psf_image(), SCALE, noise_sigma, seed, DetectConfig(), FlagConfig()
    )


def _mean(result, version, column="G1", keep=None):
    table = result.tables[version]
    good = np.asarray(table["MCAL_FLAGS"]) == 0
    if keep is not None:
        good &= keep[version]
    return float(np.mean(np.asarray(table[column])[good]))


def _good(table):
    """Rows measured without a flag (noiseless images also give numerical-noise detections)."""
    return table[np.asarray(table["MCAL_FLAGS"]) == 0]


def _response(result, keep=None):
    step = result.step
    return (_mean(result, "1p", keep=keep) - _mean(result, "1m", keep=keep)) / (2 * step)


def test_round_galaxy_response_matches_the_analytic_one():
    # a Gaussian galaxy under the round Gaussian kernel, Gaussian weight:
    # R = 2 s_g / (s_g + s_t) * s_w / (s_g + s_t + s_w) (squared sigmas)
    engine = _engine()
    result = _measure(engine, _scene([(100.3, 99.6)], (200, 200)))
    assert len(_good(result.tables["noshear"])) == 1
    sg = GAL_SIGMA**2
    st = result.meta["reconvolution_sigma_arcsec"] ** 2
    sw = (DEFAULTS["weight_fwhm"] / FWHM_PER_SIGMA) ** 2
    expected = 2 * sg / (sg + st) * sw / (sg + st + sw)
    assert _response(result) == pytest.approx(expected, rel=2e-3)


def test_a_sheared_galaxy_gives_the_same_shear_in_every_cell_layout():
    image = _scene([(100.4, 90.7)], (200, 200), g1=0.02)
    shears = []
    for core, buffer in ((200, 40), (64, 40), (90, 50)):
        result = _measure(_engine(cell_size=core, cell_buffer=buffer), image)
        assert len(_good(result.tables["noshear"])) == 1
        shears.append(_mean(result, "noshear") / _response(result))
    assert np.ptp(shears) < 1e-4
    assert shears[0] == pytest.approx(0.02, abs=2e-4)


def test_a_whole_image_correction_field_is_cut_per_cell(monkeypatch):
    """``correction_field``: each cell corrects with its region of the given
    field (times the noise sigma), not a field of its own seed."""
    import blendflag.shear.cells as cells_module

    image = _scene([(100.4, 90.7)], (200, 200), g1=0.02)
    field = np.random.default_rng(3).standard_normal(image.shape)
    seen = []
    original = cells_module.cell_correction

    def spy(source, shape, sigma):
        seen.append((source, shape))
        return original(source, shape, sigma)

    monkeypatch.setattr(cells_module, "cell_correction", spy)
    engine = _engine(cell_size=64, cell_buffer=40)
    engine.measure_cells(
        image, None, _psf_image(), SCALE, 1e-3, 1, DetectConfig(), FlagConfig(),
        correction_field=field,
    )  # fmt: skip
    regions = {
        (y1 - y0, x1 - x0, y0, x0)
        for y0, y1, x0, x1 in (c.region for c in cell_grid(image.shape, 64, 40))
    }
    assert seen  # the cells with pixels to measure (the empty ones add no correction)
    for source, shape in seen:
        cut = [(y0, x0) for ny, nx, y0, x0 in regions if (ny, nx) == shape]
        assert any(
            np.array_equal(source, field[y0 : y0 + shape[0], x0 : x0 + shape[1]]) for y0, x0 in cut
        )
    seen.clear()
    _measure(engine, image)  # no field given: each cell's own seed
    assert seen and all(isinstance(source, (int, np.integer)) for source, _ in seen)


def test_no_object_is_counted_twice_across_cell_boundaries():
    rng = np.random.default_rng(4)
    # galaxies on and near the boundaries of 64-pixel cores
    positions = [
        (64 * i + rng.uniform(-1.5, 1.5), 64 * j + rng.uniform(-1.5, 1.5))
        for i in (1, 2)
        for j in (1, 2)
    ]
    image = _scene(positions, (192, 192))
    for core in (64, 100, 192):
        result = _measure(_engine(cell_size=core, cell_buffer=40), image)
        for version, table in result.tables.items():
            assert len(_good(table)) == len(positions), (core, version)
        x = np.asarray(_good(result.tables["noshear"])["X_IMAGE"]) - 1
        assert np.allclose(np.sort(x), np.sort([p[0] for p in positions]), atol=0.2)


def test_cells_tile_the_image_once():
    cells = cell_grid((250, 310), 64, 20)
    owned = np.zeros((250, 310), int)
    y, x = np.mgrid[0:250, 0:310]
    for cell in cells:
        owned += cell.owns(x, y)
        y0, y1, x0, x1 = cell.region
        assert 0 <= y0 and y1 <= 250 and 0 <= x0 and x1 <= 310
    assert np.all(owned == 1)


def test_a_cut_on_each_sheared_catalogue_has_a_selection_response():
    rng = np.random.default_rng(7)
    grid = [(24 + 36 * i + rng.uniform(-0.5, 0.5), 24 + 36 * j) for i in range(8) for j in range(8)]
    shapes = rng.normal(0.0, 0.2, size=(len(grid), 2))
    result = _measure(_engine(cell_size=150, cell_buffer=40), _scene(grid, (300, 300), 0.0, shapes))
    r_all = _response(result)
    # a cut on the measured (sheared) shape, made on each version separately
    by_shape = {v: np.asarray(t["G1"]) > 0.0 for v, t in result.tables.items()}
    # a cut on nothing sheared: the position before the version's shear
    by_place = {v: np.asarray(t["X_UNSHEARED"]) < 150 for v, t in result.tables.items()}
    r_shape = _response(result, by_shape)
    r_place = _response(result, by_place)
    # keeping e1 > 0 gains, in 1p, objects pushed across zero (e1 near 0) and
    # loses them in 1m: a selection response of order (density at e1 = 0) x R,
    # far above the object-to-object spread of R
    assert abs(r_shape - r_all) > 0.2
    assert abs(r_place - r_all) < 0.02


def test_weighted_moments_of_a_round_gaussian():
    sigma_pix = 3.0
    y, x = np.mgrid[0:41, 0:41]
    stamp = np.exp(-0.5 * ((x - 20.2) ** 2 + (y - 19.7) ** 2) / sigma_pix**2)
    fwhm = 2.5
    moments = weighted_moments(stamp[None], np.array([[20.2, 19.7]]), fwhm, 1.0, 0.0)
    sw = (fwhm / FWHM_PER_SIGMA) ** 2
    # the product of two Gaussians: variance 1 / (1/s + 1/sw) per axis
    assert moments.T[0] == pytest.approx(2.0 / (1.0 / sigma_pix**2 + 1.0 / sw), rel=1e-6)
    assert abs(moments.e1[0]) < 1e-6 and abs(moments.e2[0]) < 1e-6
    assert moments.ok[0]


def test_the_engine_is_chosen_by_name_or_priority():
    engines = get_shear_engines(get_plugin_manager())
    assert select_engine(engines, "metadetect") is Metadetection
    best = select_engine(engines, "auto")
    assert best.priority >= Metadetection.priority
    assert max(cls.priority for cls in engines.values() if cls.available()) == best.priority


def test_bad_settings_are_one_line_errors():
    with pytest.raises(BlendflagError, match="unknown setting 'cellsize'"):
        _ = _engine(cellsize=100).settings
    with pytest.raises(BlendflagError, match="cell_buffer"):
        _ = _engine(cell_buffer=5).settings


def test_the_edge_window_tapers_only_the_outer_buffer():
    from blendflag_plugins.metadetect_cells import edge_window

    window = edge_window((60, 80), 10)
    assert window.shape == (60, 80)
    assert np.all(window[10:-10, 10:-10] == 1.0)
    assert window[0, 0] < 0.01 and window[0, 40] < 0.03 and window[30, 0] < 0.03
    assert np.all(np.diff(window[30, :10]) > 0)  # rises monotonically
    assert np.all(edge_window((5, 7), 0) == 1.0)


def test_a_near_noiseless_grid_gives_no_spurious_object_and_no_bias():
    # cells cut through the galaxies' light: without the taper (apodize=0) the
    # ringing of the cut edges passes the cuts when the noise is this low
    positions = [(40.0 + 45 * i, 40.0 + 45 * j) for i in range(3) for j in range(3)]
    g = 0.02
    results = [
        _measure(_engine(cell_size=64, cell_buffer=40), _scene(positions, (170, 170), s * g))
        for s in (1, -1)
    ]
    for result in results:
        for table in result.tables.values():
            assert len(_good(table)) == len(positions)
    plus, minus = results
    m = (_mean(plus, "noshear") - _mean(minus, "noshear")) / (
        _response(plus) + _response(minus)
    ) / g - 1
    assert abs(m) < 1e-3


def test_a_varying_psf_is_read_at_each_cells_centre():
    """Each cell deconvolves the PSF model at its core's centre, so each galaxy gives its shear."""
    from blendflag.psf.model import PSFModel

    class Recorded(PSFModel):
        """FWHM 0.7" on the left half of the image, 1.0" on the right; remembers where asked."""

        description = "test model"

        def __init__(self):
            self.asked = []

        def image_at(self, x, y, size=None, pixel_scale=None):
            self.asked.append((x, y))
            image = _half_psf(x).drawImage(nx=size, ny=size, scale=SCALE).array
            return image / image.sum()

    def _half_psf(x):
        return galsim.Gaussian(fwhm=0.7 if x < 100 else 1.0)

    # one round galaxy sheared by g1 = 0.02 per cell, convolved with its half's PSF
    image = galsim.ImageD(200, 100, scale=SCALE)
    for x in (50.3, 150.6):
        gal = galsim.Gaussian(sigma=GAL_SIGMA, flux=1000.0).shear(g1=0.02, g2=0.0)
        stamp = galsim.Convolve(gal, _half_psf(x)).drawImage(
            nx=41, ny=41, scale=SCALE, center=galsim.PositionD(x + 1, 50.5)
        )
        image[stamp.bounds & image.bounds] += stamp[stamp.bounds & image.bounds]

    def shears(result):
        """g1 = <e>/R of the left and the right galaxy (matched by x across versions)."""
        e = {}
        for version, table in result.tables.items():
            good = _good(table)
            assert len(good) == 2, version
            e[version] = np.asarray(good["G1"])[np.argsort(np.asarray(good["X_IMAGE"]))]
        return e["noshear"] / ((e["1p"] - e["1m"]) / (2 * result.step))

    model = Recorded()
    engine = _engine(cell_size=100, cell_buffer=40)
    args = (image.array, None, _psf_image(), SCALE, 1e-3, 1, DetectConfig(), FlagConfig())
    result = engine.measure_cells(*args, psf_model=model)
    assert sorted(model.asked) == [(50.5, 50.5), (150.5, 50.5)]
    assert result.meta["psf"] == "test model at every cell's centre"
    np.testing.assert_allclose(shears(result), 0.02, rtol=0.01)
    # the one PSF image (the left half's) misses the right galaxy's shear
    plain = engine.measure_cells(*args)
    assert plain.meta["psf"] == "one PSF image"
    left, right = shears(plain)
    assert left == pytest.approx(0.02, rel=0.01) and abs(right / 0.02 - 1) > 0.03


def test_cells_read_a_varying_psf_at_their_centre_and_seed_their_fields_alike():
    from blendflag.shear.cells import cell_grid, cell_seeds, correction_noise

    class Model:
        varies = True

        def image_at(self, x, y, size, scale):
            return np.full((size, size), x + 1000 * y)

    cells = cell_grid((300, 500), 200, 50)
    psf = np.ones((5, 5))
    assert cells[1].centre == (300.5, 100.5)  # core x 200-399 (0-based): 1-based mean
    assert cells[1].psf(psf, Model(), 0.2)[0, 0] == 300.5 + 1000 * 100.5
    assert np.all(cells[1].psf(psf, None, 0.2) == 1)
    seeds = cell_seeds(7, len(cells))
    assert np.array_equal(seeds, cell_seeds(7, len(cells))) and len(set(seeds)) == len(cells)
    a = correction_noise(seeds[0], (50, 60), 2.0)
    assert np.array_equal(a, correction_noise(seeds[0], (50, 60), 2.0))
    assert a.std() == pytest.approx(2.0, rel=0.05)
