"""The metacalibration engines: GalSim (built in) and ngmix (when it imports)."""

from __future__ import annotations

import numpy as np
import pytest

from blendflag.config import PipelineConfig, ShearConfig
from blendflag.errors import BlendflagError
from blendflag.pipeline.stages import Context, stage_measure_shear
from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine
from blendflag.shear.bench import bench_shear_engines
from blendflag.shear.results import (
    MCAL_EMPTY_STAMP,
    MCAL_NONFINITE_STAMP,
    METACAL_VERSIONS,
    MetacalResult,
)
from blendflag.shear.statistics import selection_statistics, shear_response
from blendflag.shear.testdata import isolated_galaxy_pairs

galsim = pytest.importorskip("galsim")

from blendflag_plugins.metacal_galsim import GalSimMetacal, round_target_psf  # noqa: E402

TRUE_G1 = 0.02


@pytest.fixture(scope="module")
def pairs():
    """40 noiseless rotated pairs, PSF elongated along g2 (leaks into c if mishandled)."""
    return isolated_galaxy_pairs(
        40, np.random.default_rng(11), true_shear=(TRUE_G1, 0.0), psf_shear=(0.0, 0.02)
    )


#: The adaptive-moments shape: the tests on ``noiseless_result`` check its known floor.
ADMOM = ShearConfig(options={"metacal": {"shape": "admom"}})


@pytest.fixture(scope="module")
def noiseless_result(pairs):
    return GalSimMetacal(ADMOM).measure(
        pairs.stamps, pairs.psf, pairs.pixel_scale, 0.0, np.random.default_rng(1)
    )


def test_engines_are_registered_as_plugins():
    engines = get_shear_engines(get_plugin_manager())
    assert engines["metacal"] is GalSimMetacal
    assert GalSimMetacal.available()
    assert "ngmix" in engines
    # both take the paired correction fields: with ngmix, auto chooses it for a simulation
    assert GalSimMetacal.takes_noise_fields and engines["ngmix"].takes_noise_fields
    try:
        import ngmix  # noqa: F401
    except ImportError:
        assert not engines["ngmix"].available()
        assert select_engine(engines, "auto", paired=True) is GalSimMetacal
    else:
        assert engines["ngmix"].available()
        assert select_engine(engines, "auto", paired=True) is engines["ngmix"]


def test_register_shear_engines_hook_adds_a_third_party_engine():
    from blendflag import hookimpl
    from blendflag.errors import PluginError
    from blendflag.shear.engine import ShearEngine

    class MyEngine(ShearEngine):
        name = "mine"

    class Plugin:
        @hookimpl
        def blendflag_register_shear_engines(self):
            return [MyEngine]

    pm = get_plugin_manager(extra_plugins=[("mine", Plugin())])
    lists = pm.hook.blendflag_register_shear_engines()
    assert [MyEngine] in lists and [GalSimMetacal] in lists
    assert get_shear_engines(pm)["mine"] is MyEngine

    class Clash(Plugin):
        @hookimpl
        def blendflag_register_shear_engines(self):
            return [type("Other", (ShearEngine,), {"name": "metacal"})]

    with pytest.raises(PluginError, match="two plugins register a shear engine named 'metacal'"):
        get_shear_engines(get_plugin_manager(extra_plugins=[("clash", Clash())]))


def test_result_table_columns(noiseless_result, pairs):
    table = noiseless_result.table
    for version in METACAL_VERSIONS:
        assert f"G1_{version.upper()}" in table.colnames
        assert f"G2_{version.upper()}" in table.colnames
    assert len(table) == len(pairs.stamps)
    assert (table["MCAL_FLAGS"] == 0).all()
    assert np.isfinite(table["T_NOSHEAR"]).all()
    # noiseless: infinite signal-to-noise
    assert np.isinf(table["S2N_NOSHEAR"]).all()
    # T in arcsec^2: galaxy (hlr 0.3-0.7") convolved with a ~0.8" FWHM kernel
    assert 0.1 < np.median(table["T_NOSHEAR"]) < 2.0
    assert noiseless_result.images is None


def test_noiseless_rotated_pairs_recover_the_shear(noiseless_result, pairs):
    """m within 4 bootstrap sigma plus the estimator's known cubic-order floor.

    <e>/R has a term of order g^3 that metacal does not remove: with these
    galaxies m is +1.06 g^2 (measured at g = 0.01, 0.02, 0.04, with steps
    0.01 and 0.005: it scales as g^2 and does not depend on the step). The
    floor 2 g^2 = 8e-4 at g = 0.02 leaves room for that and nothing more:
    any percent-level error in the response fails.
    """
    entry = selection_statistics(
        noiseless_result.table,
        "all",
        step=0.01,
        true_shear=pairs.true_shear,
        rng=np.random.default_rng(2),
        n_bootstrap=200,
        pair_id=pairs.pair_id,
    )
    floor = 2.0 * TRUE_G1**2
    assert abs(entry["m"]) < 4 * entry["m_err"] + floor
    assert abs(entry["c"]) < 4 * entry["c_err"] + 1e-5
    assert entry["m_err"] < 1e-3  # pairs cancel the shape noise


def test_weighted_moments_shape_recovers_the_shear(pairs):
    """``shape: wmom`` (one fixed Gaussian weight, recentred in each version)
    on noiseless ±g pairs: |m| < 1e-3 (measured -9e-5 +/- 3e-5 on 200 pairs;
    a weight left at the stamp's centre gives -0.02, at the noshear centroid
    -0.008), a size for every object, and an unknown shape refused."""
    config = ShearConfig(options={"metacal": {"shape": "wmom", "weight_fwhm": 1.2}})
    shear = []
    for sign in (1, -1):
        data = isolated_galaxy_pairs(
            40, np.random.default_rng(11), true_shear=(sign * TRUE_G1, 0.0), psf_shear=(0, 0.02)
        )
        table = (
            GalSimMetacal(config)
            .measure(data.stamps, data.psf, data.pixel_scale, 0.0, np.random.default_rng(1))
            .table
        )
        assert (table["MCAL_FLAGS"] == 0).all() and np.isfinite(table["T_NOSHEAR"]).all()
        R = shear_response(table, step=0.01)
        assert 0.2 < R[0, 0] < 1.6  # a fixed weight responds less than an adaptive one
        shear.append(np.mean(table["G1_NOSHEAR"]) / R[0, 0])
    m = (shear[0] - shear[1]) / (2 * TRUE_G1) - 1
    assert abs(m) < 1e-3
    with pytest.raises(BlendflagError, match="shape: must be admom or wmom"):
        _ = GalSimMetacal(ShearConfig(options={"metacal": {"shape": "ksb"}})).settings


def _blend_shape(x_target: float, offsets: bool):
    """wmom noshear shape of a galaxy at ``x_target`` (1-based) with a brighter neighbour."""
    from blendflag.io.stamps import cut_stamps

    scale, y_target = 0.187, 60.3
    psf = galsim.Moffat(beta=2.5, fwhm=0.7)
    image = galsim.ImageF(121, 121, scale=scale)
    for x, y, flux, g in (
        (x_target, y_target, 1e4, (0.1, 0.05)),
        (x_target + 7, 63.3, 2e4, (-0.2, 0.1)),
    ):
        gal = galsim.Exponential(half_light_radius=0.5, flux=flux).shear(g1=g[0], g2=g[1])
        galsim.Convolve(gal, psf).drawImage(
            image=image, center=galsim.PositionD(x, y), add_to_image=True
        )
    stamps, _ = cut_stamps(image.array, np.array([x_target]), np.array([y_target]), 51)
    position = np.array([[x_target, y_target]]) - 1.0
    table = (
        GalSimMetacal(ShearConfig())
        .measure(
            stamps,
            psf.drawImage(nx=51, ny=51, scale=scale).array,
            scale,
            0.0,
            np.random.default_rng(1),
            offsets=position - np.rint(position) if offsets else None,
        )
        .table
    )
    return np.array([table["G1_NOSHEAR"][0], table["G2_NOSHEAR"][0]])


def test_wmom_shape_does_not_jump_when_the_stamp_centre_does():
    """A galaxy next to a brighter neighbour, moved by 0.02 px across a half
    pixel: its stamp's central pixel jumps by one. Started at the detection's
    sub-pixel position (``offsets``) the weight ends where it did and the shape
    changes by < 1e-4 (2e-8 measured); started at the central pixel, three
    centring steps end elsewhere next to the neighbour (0.014 measured). This
    jump carried most of the variance of m in the +g/-g pairs of `compare`."""
    moved = _blend_shape(60.51, offsets=True) - _blend_shape(60.49, offsets=True)
    jumped = _blend_shape(60.51, offsets=False) - _blend_shape(60.49, offsets=False)
    assert np.abs(moved).max() < 1e-4
    assert np.abs(jumped).max() > 1e-3  # the setting this test guards is one that jumps


def test_stamp_offsets_follow_the_cutout_and_the_crop():
    """Offsets from the central pixel of the cropped stamp, also for an even cutout."""
    from types import SimpleNamespace

    from astropy.table import Table

    from blendflag.shear.inputs import stamp_offsets

    table = Table({"X_IMAGE": [10.6, 20.0], "Y_IMAGE": [7.2, 30.5]})
    odd = SimpleNamespace(table=table, stamps=np.zeros((2, 51, 51)))
    assert np.allclose(stamp_offsets(odd, 41), [[-0.4, 0.2], [0.0, -0.5]])
    even = SimpleNamespace(table=table, stamps=np.zeros((2, 52, 52)))
    # an even cutout puts the object on pixel 26; cropped to 41 that is pixel 21, centre 20
    assert np.allclose(stamp_offsets(even, 41), [[0.6, 1.2], [1.0, 0.5]])
    assert stamp_offsets(SimpleNamespace(table=Table({"A": [1]}), stamps=None), 41) is None


def test_response_is_positive_and_sensible(noiseless_result):
    R = shear_response(noiseless_result.table, step=0.01)
    # the distortion of a resolved galaxy responds to shear with R ~ 2 (1 - e^2) x resolution
    assert 0.5 < R[0, 0] < 1.6
    # R11 - R22 of one object goes with e2^2 - e1^2 (rms ~0.1 here), so 40
    # independent shapes agree to a few percent only
    assert R[1, 1] == pytest.approx(R[0, 0], rel=0.1)
    assert abs(R[0, 1]) < 0.05 * R[0, 0] and abs(R[1, 0]) < 0.05 * R[0, 0]


def test_noisy_stamps_with_noise_correction_and_images(pairs):
    rng = np.random.default_rng(5)
    sigma = 10.0
    stamps = pairs.stamps[:6] + rng.normal(0.0, sigma, pairs.stamps[:6].shape).astype(np.float32)
    result = GalSimMetacal(ShearConfig()).measure(
        stamps, pairs.psf, pairs.pixel_scale, sigma, rng, return_images=True
    )
    assert isinstance(result, MetacalResult)
    assert result.good.all()
    assert result.meta["fixnoise"] is True
    s2n = np.asarray(result.table["S2N_NOSHEAR"])
    # flux 1e4 ADU, sigma 10 ADU: S/N of order 50-100 (fixnoise doubles the variance)
    assert np.all((s2n > 20) & (s2n < 200))
    assert set(result.images) == set(METACAL_VERSIONS)
    for version in METACAL_VERSIONS:
        assert result.images[version].shape == stamps.shape
        assert result.images[version].dtype == np.float32
    noshear = result.images["noshear"]
    # flux is preserved and the object stays at the centre
    assert noshear.sum(axis=(1, 2)) == pytest.approx(stamps.sum(axis=(1, 2)), rel=0.1)
    centre = stamps.shape[1] // 2
    peaks = np.array([np.unravel_index(np.argmax(im), im.shape) for im in noshear])
    assert np.all(np.abs(peaks - centre) <= 2)
    # the noise correction adds noise: the corner rms grows by about sqrt(2) x (correlated)
    corner = noshear[:, :10, :10]
    assert corner.std() > 0.5 * sigma


def test_bad_stamps_are_flagged_not_raised(pairs):
    stamps = pairs.stamps[:4].copy()
    stamps[1] = 0.0
    stamps[2, 10, 10] = np.nan
    result = GalSimMetacal(ShearConfig()).measure(
        stamps,
        pairs.psf,
        pairs.pixel_scale,
        np.array([0.0, 0.0, 0.0, 0.0]),
        np.random.default_rng(0),
    )
    flags = np.asarray(result.table["MCAL_FLAGS"])
    assert flags[0] == 0 and flags[3] == 0
    assert flags[1] & MCAL_EMPTY_STAMP
    assert flags[2] & MCAL_NONFINITE_STAMP
    assert np.isnan(result.table["G1_NOSHEAR"][1]) and np.isnan(result.table["T_NOSHEAR"][2])


def test_failures_inside_the_engine_become_flags(pairs, monkeypatch):
    from blendflag.shear.metacal_ops import MetacalOperators
    from blendflag.shear.results import MCAL_ENGINE_FAILED, MCAL_MOMENTS_FAILED, MCAL_RENDER_FAILED

    real_images = MetacalOperators.images
    real_moments = galsim.hsm.FindAdaptiveMom
    calls = {"images": 0, "moments": 0}

    def images(self, *args, **kwargs):
        calls["images"] += 1
        if calls["images"] == 1:
            raise galsim.GalSimFFTSizeError("too big", 1 << 20)
        if calls["images"] == 2:
            raise KeyError("anything else")
        return real_images(self, *args, **kwargs)

    def moments(image, **kwargs):
        calls["moments"] += 1
        if calls["moments"] == 3:  # the 1m version of the third object
            kwargs["hsmparams"] = galsim.hsm.HSMParams(max_mom2_iter=1)
        return real_moments(image, **kwargs)

    monkeypatch.setattr(MetacalOperators, "images", images)
    monkeypatch.setattr(galsim.hsm, "FindAdaptiveMom", moments)
    result = GalSimMetacal(ADMOM).measure(
        pairs.stamps[:4], pairs.psf, pairs.pixel_scale, 0.0, np.random.default_rng(0)
    )
    flags = list(result.table["MCAL_FLAGS"])
    assert flags == [MCAL_RENDER_FAILED, MCAL_ENGINE_FAILED, MCAL_MOMENTS_FAILED, 0]
    assert np.isnan(result.table["G1_NOSHEAR"][2])


def test_reconvolution_psf_is_round_and_below_the_psf(pairs):
    psf = galsim.InterpolatedImage(
        galsim.ImageD(pairs.psf, scale=pairs.pixel_scale), x_interpolant="lanczos15"
    )
    target = round_target_psf(psf)
    assert isinstance(target, galsim.Gaussian)
    # larger than the PSF in real space...
    psf_sigma = galsim.hsm.FindAdaptiveMom(galsim.ImageD(pairs.psf, scale=1.0)).moments_sigma
    assert target.sigma / pairs.pixel_scale > psf_sigma
    # ...so below it in Fourier space where the PSF has little power left
    k = np.linspace(2.0, psf.maxk, 40)
    for angle in (0.0, 0.7, 1.4):
        p = np.array(
            [psf.kValue(galsim.PositionD(kk * np.cos(angle), kk * np.sin(angle))).real for kk in k]
        )
        t = np.array([target.kValue(galsim.PositionD(kk, 0.0)).real for kk in k])
        assert np.all(t[p < 0.1] < p[p < 0.1])


def test_pipeline_stage_runs_the_engine(pairs):
    context = Context(config=PipelineConfig(), pm=get_plugin_manager())
    context.stamps = pairs.stamps[:4]
    context.psf = pairs.psf
    context.shear_engine = "metacal"
    context.noise_sigma = 0.0
    context.pixel_scale = pairs.pixel_scale
    stage_measure_shear(context)
    result = context.results["shear"]
    assert result.engine == "metacal"
    assert result.good.all()
    assert result.meta["pixel_scale"] == pytest.approx(pairs.pixel_scale)


def test_bench_shear_engines():
    rows = bench_shear_engines(n=4, rng=np.random.default_rng(0), names=["metacal"])
    assert [r["name"] for r in rows] == ["metacal"]
    assert rows[0]["stage"] == "shear engine metacal"
    assert rows[0]["objects_per_s"] > 0 and rows[0]["n"] == 4 and rows[0]["n_flagged"] == 0


#: Noise of the same-fields comparison (ADU): S/N about 100 for the 1e4-ADU galaxies.
SAME_FIELDS_SIGMA = 10.0
#: Tolerances of the same-fields comparison (24 stamps): the rms over the
#: stamps of the per-object difference, built-in minus ngmix, of the noshear
#: (g1, g2) and of R11. Measured with three noise seeds (3, 4, 5): wmom
#: g 1.7e-16 to 2.3e-16, R 1.1e-14 to 1.4e-14 (both engines move the weight
#: onto the light in each version, three steps: the same estimator, equal to
#: round-off; the tolerance is far above round-off and far below the 1e-3
#: that one step fewer makes); admom g 0.85e-5 to 1.0e-5, R 5.1e-4 to
#: 6.0e-4 (the two adaptive fits' convergence, ngmix's etol 1e-5), and there
#: each tolerance is 2.5 x the largest measured rms.
SAME_FIELDS_RMS = {"wmom": {"g": 1e-10, "R": 1e-9}, "admom": {"g": 2.5e-5, "R": 1.5e-3}}


def _same_kernel_pair(pairs, shape, stamps, sigma, rng_seed, **kwargs):
    """The built-in engine and ngmix on the same stamps with the same reconvolution kernel.

    Returns the two results' tables (built-in first) and ngmix's result; the
    weight sits where the galaxy is in both (``offsets``).
    """
    from blendflag_plugins.ngmix_engine import NgmixMetacal

    options = {"metacal": {"shape": shape}, "ngmix": {"shape": shape}}
    offsets = pairs.offsets[: len(stamps)]
    ours = GalSimMetacal(ShearConfig(options=options)).measure(
        stamps,
        pairs.psf,
        pairs.pixel_scale,
        sigma,
        np.random.default_rng(0),
        offsets=offsets,
        **kwargs,
    )
    # the same reconvolution kernel in both (``psf: kspace``), so only the two codes differ
    options["ngmix"]["psf"] = "kspace"
    theirs = NgmixMetacal(ShearConfig(options=options)).measure(
        stamps,
        pairs.psf,
        pairs.pixel_scale,
        sigma,
        np.random.default_rng(rng_seed),
        offsets=offsets,
        **kwargs,
    )
    return ours.table, theirs.table, theirs


def _differences(a, b) -> dict:
    """Per-object built-in minus ngmix: noshear ``g`` (g1 and g2) and ``R`` (R11)."""
    col = lambda t, c: np.asarray(t[c], dtype=float)  # noqa: E731
    response = lambda t: (col(t, "G1_1P") - col(t, "G1_1M")) / 0.02  # noqa: E731
    return {
        "g": np.concatenate([col(a, c) - col(b, c) for c in ("G1_NOSHEAR", "G2_NOSHEAR")]),
        "R": response(a) - response(b),
    }


@pytest.mark.slow  # ngmix's numba compilation, and 24 noisy stamps three times per shape
@pytest.mark.parametrize("shape", ["wmom", "admom"])
def test_ngmix_engine_agrees_with_galsim(pairs, shape):
    """The built-in engine and ngmix's metacal on the same stamps and the same fields.

    Noiseless (8 stamps): the same kernel and moments give the same shapes to
    Admom's convergence (2e-5). Noisy (24 stamps, sigma 10 ADU) with the same
    noise-correction fields given to both: for g and R the per-object
    difference has a mean within 4 standard errors of zero (4 x rms /
    sqrt(n), the sample's own scatter) and an rms below
    :data:`SAME_FIELDS_RMS` (2.5 x the rms measured on three noise seeds);
    with ngmix drawing its own field instead, g differs by 0.016 to 0.020
    rms (wmom) and 0.03 (admom): the same-fields rms must be 5 times
    smaller, which shows that ngmix corrects with the given field, turned
    as the built-in engine turns it.
    """
    pytest.importorskip("ngmix", reason="ngmix is not installed (it is not on PyPI)")
    from blendflag_plugins.ngmix_engine import NgmixMetacal

    a, b, theirs = _same_kernel_pair(pairs, shape, pairs.stamps[:8], 0.0, 0)
    assert theirs.good.all()
    # Admom converges to |de| < 1e-5 (its etol): agreement to that level
    np.testing.assert_allclose(a["G1_NOSHEAR"], b["G1_NOSHEAR"], atol=2e-5)
    np.testing.assert_allclose(a["G2_NOSHEAR"], b["G2_NOSHEAR"], atol=2e-5)
    np.testing.assert_allclose(a["T_NOSHEAR"], b["T_NOSHEAR"], rtol=1e-4)
    Rb = (b["G1_1P"] - b["G1_1M"]) / 0.02
    np.testing.assert_allclose((a["G1_1P"] - a["G1_1M"]) / 0.02, Rb, atol=2e-3)

    rng = np.random.default_rng(3)
    stamps = pairs.stamps[:24] + rng.normal(0.0, SAME_FIELDS_SIGMA, (24, 51, 51)).astype(np.float32)
    fields = rng.normal(0.0, SAME_FIELDS_SIGMA, stamps.shape)
    a, b, theirs = _same_kernel_pair(
        pairs, shape, stamps, SAME_FIELDS_SIGMA, 5, noise_fields=fields
    )
    assert theirs.good.all() and theirs.meta["noise_fields"] == "given"
    same = _differences(a, b)
    for key, d in same.items():
        sem = np.std(d, ddof=1) / np.sqrt(len(d))
        assert abs(np.mean(d)) < 4 * sem + SAME_FIELDS_RMS[shape][key], key
        assert np.std(d) < SAME_FIELDS_RMS[shape][key], key
    _, drawn, result = _same_kernel_pair(pairs, shape, stamps, SAME_FIELDS_SIGMA, 5)
    assert result.meta["noise_fields"] == "drawn"
    assert np.std(same["g"]) < np.std(_differences(a, drawn)["g"]) / 5

    # and with ngmix's own default kernel the images still measure a shear
    options = {"ngmix": {"shape": shape}}
    default = NgmixMetacal(ShearConfig(options=options)).measure(
        pairs.stamps[:8], pairs.psf, pairs.pixel_scale, 0.0, np.random.default_rng(0)
    )
    assert default.good.all()
    # (another round kernel: R within 20% of the test kernel's)
    assert 0.8 < shear_response(default.table)[0, 0] / np.mean(Rb) < 1.2


def test_ngmix_engine_flags_bad_stamps(pairs):
    pytest.importorskip("ngmix", reason="ngmix is not installed (it is not on PyPI)")
    from blendflag_plugins.ngmix_engine import NgmixMetacal

    stamps = pairs.stamps[:3].copy()
    stamps[0] = 0.0
    stamps[1, 3, 3] = np.inf
    result = NgmixMetacal(ShearConfig()).measure(
        stamps, pairs.psf, pairs.pixel_scale, 5.0, np.random.default_rng(0), return_images=True
    )
    flags = np.asarray(result.table["MCAL_FLAGS"])
    assert flags[0] & MCAL_EMPTY_STAMP and flags[1] & MCAL_NONFINITE_STAMP and flags[2] == 0
    assert result.images["1p"].shape == stamps.shape


def test_given_noise_fields_replace_the_random_ones(pairs):
    """Passing the correction fields makes the result independent of ``rng``, and a
    turned copy of the field for a turned stamp gives the turned measurement."""
    rng = np.random.default_rng(8)
    sigma = 10.0
    stamp = pairs.stamps[0] + rng.normal(0.0, sigma, pairs.stamps[0].shape).astype(np.float32)
    field = rng.normal(0.0, sigma, stamp.shape)
    stamps = np.stack([stamp, np.rot90(stamp, -1)])
    fields = np.stack([field, np.rot90(field, -1)])
    engine = GalSimMetacal(ShearConfig())
    a = engine.measure(
        stamps, pairs.psf, pairs.pixel_scale, sigma, np.random.default_rng(1), noise_fields=fields
    )
    b = engine.measure(
        stamps, pairs.psf, pairs.pixel_scale, sigma, np.random.default_rng(2), noise_fields=fields
    )
    c = engine.measure(stamps, pairs.psf, pairs.pixel_scale, sigma, np.random.default_rng(2))
    assert a.meta["noise_fields"] == "given" and c.meta["noise_fields"] == "drawn"
    np.testing.assert_array_equal(
        np.asarray(a.table["G1_NOSHEAR"]), np.asarray(b.table["G1_NOSHEAR"])
    )
    assert not np.allclose(np.asarray(a.table["G1_NOSHEAR"]), np.asarray(c.table["G1_NOSHEAR"]))
    # the turned object with the turned field: e -> -e and the same response (the
    # PSF is elongated along g2 here, so agreement is to its small effect only)
    g1 = np.asarray(a.table["G1_NOSHEAR"])
    assert g1[1] == pytest.approx(-g1[0], abs=0.02)
    with pytest.raises(ValueError, match="noise fields"):
        engine.measure(stamps, pairs.psf, pairs.pixel_scale, sigma, rng, noise_fields=fields[:1])


def test_filled_result_table_flags_nonfinite_and_blanks_flagged_rows():
    """The table fill both stamp engines share: values of unflagged rows only."""
    from blendflag.shear.results import (
        MCAL_MOMENTS_FAILED,
        MCAL_NONFINITE_RESULT,
        SHAPE_COLUMNS,
        filled_result_table,
    )

    shapes = np.full((5, 2, 4), 0.1)
    shapes[2, 1, 1] = np.nan  # object 1: one version's e2 is NaN
    size = np.array([0.5, 0.5, np.inf, 0.5])  # object 2: infinite size
    s2n = np.array([20.0, 20.0, 20.0, np.inf])
    flags = np.array([0, 0, 0, MCAL_MOMENTS_FAILED], dtype=np.int32)
    table = filled_result_table(shapes, size, s2n, flags)
    assert list(table["MCAL_FLAGS"]) == [
        0,
        MCAL_NONFINITE_RESULT,
        MCAL_NONFINITE_RESULT,
        MCAL_MOMENTS_FAILED,
    ]
    assert list(flags) == [0, 0, 0, MCAL_MOMENTS_FAILED]  # the caller's flags are left alone
    for column in [c for v in METACAL_VERSIONS for c in SHAPE_COLUMNS[v]]:
        assert table[column][0] == 0.1 and np.isnan(table[column][1:]).all()
    assert table["T_NOSHEAR"][0] == 0.5 and table["S2N_NOSHEAR"][0] == 20.0
    assert np.isnan(table["S2N_NOSHEAR"][3])


def test_nonfinite_shapes_become_a_flag_in_the_galsim_engine(pairs, monkeypatch):
    from blendflag.shear.results import MCAL_NONFINITE_RESULT
    from blendflag_plugins import metacal_galsim

    real = metacal_galsim.version_shapes
    calls = {"n": 0}

    def shapes(*args, **kwargs):
        calls["n"] += 1
        e, size, num, den = real(*args, **kwargs)
        if calls["n"] == 2:
            size = np.full_like(size, np.nan)
        return e, size, num, den

    monkeypatch.setattr(metacal_galsim, "version_shapes", shapes)
    result = GalSimMetacal(ShearConfig()).measure(
        pairs.stamps[:3], pairs.psf, pairs.pixel_scale, 0.0, np.random.default_rng(0)
    )
    assert list(result.table["MCAL_FLAGS"]) == [0, MCAL_NONFINITE_RESULT, 0]
    assert np.isnan(result.table["G1_1P"][1]) and np.isfinite(result.table["G1_1P"][0])
    assert result.table["S2N_NOSHEAR"][0] == np.inf  # noiseless


def test_metadetect_detects_with_the_callers_plugin_manager():
    """Cells measured in the caller's process use its plugin manager (a backend
    registered by hand is found); a worker gets an empty handle (a manager
    holds modules, which do not pickle)."""
    import pickle
    from dataclasses import replace

    from blendflag.config import DetectConfig, FlagConfig
    from blendflag_plugins.metadetect_cells import CallerPluginManager
    from blendflag_plugins.metadetect_engine import Metadetection
    from blendflag_plugins.sep_detect import blendflag_detect as sep_detect

    calls = []

    class HandRegistered:
        @staticmethod
        def blendflag_detect(image, weight, config):
            if config.backend != "by_hand":
                return None
            calls.append(1)
            return sep_detect(image=image, weight=weight, config=replace(config, backend="sep"))

    image = galsim.Gaussian(sigma=0.4, flux=1e4).drawImage(nx=96, ny=96, scale=0.2).array
    psf = galsim.Gaussian(fwhm=0.7).drawImage(nx=31, ny=31, scale=0.2).array
    args = (image, None, psf / psf.sum(), 0.2, 1.0, 3, DetectConfig(backend="by_hand"))
    engine = Metadetection(ShearConfig())
    pm = get_plugin_manager(extra_plugins=[("by_hand", HandRegistered)])
    result = engine.measure_cells(*args, FlagConfig(), pm=pm)
    assert len(calls) == len(METACAL_VERSIONS) and len(result.tables["noshear"]) >= 1
    with pytest.raises(BlendflagError, match="no detector answered for backend 'by_hand'"):
        engine.measure_cells(*args, FlagConfig())  # this process's own manager
    handle = pickle.loads(pickle.dumps(CallerPluginManager(pm)))
    assert handle.pm is None


def test_ngmix_recentre_setting(pairs):
    """``recentre: 0`` is ngmix's own GaussMom at the detection; a bad value is refused."""
    ngmix = pytest.importorskip("ngmix", reason="ngmix is not installed (it is not on PyPI)")
    from blendflag_plugins.ngmix_engine import NgmixMetacal, RecentredGaussMom

    obs = ngmix.Observation(
        pairs.stamps[0].astype(float),
        weight=np.ones(pairs.stamps[0].shape),
        jacobian=ngmix.DiagonalJacobian(row=25.3, col=24.6, scale=pairs.pixel_scale),
    )
    plain = ngmix.gaussmom.GaussMom(fwhm=1.2).go(obs)
    np.testing.assert_array_equal(RecentredGaussMom(1.2, 0).go(obs)["e"], plain["e"])
    moved = RecentredGaussMom(1.2, 3).go(obs)

    # the weight moved to the light: its first moments shrink, and the shape changed
    def centroid(res):
        return np.hypot(res["sums"][0], res["sums"][1]) / res["sums"][5]

    assert centroid(moved) < 0.2 * centroid(plain)
    assert np.abs(moved["e"] - plain["e"]).max() > 1e-4
    for bad in (-1, "three", 1.5, True):
        with pytest.raises(BlendflagError, match=r"shear\.options\.ngmix\.recentre"):
            NgmixMetacal(ShearConfig(options={"ngmix": {"recentre": bad}}))
    assert NgmixMetacal(ShearConfig(options={"ngmix": {"recentre": 2.0}})).settings["recentre"] == 2


def test_ngmix_reconvolution_psf_setting(pairs):
    """``psf: kspace`` hands ngmix the built-in kernel; ngmix's own by name; others refused."""
    pytest.importorskip("ngmix", reason="ngmix is not installed (it is not on PyPI)")
    from blendflag_plugins.ngmix_engine import NgmixMetacal

    def measured(choice):
        engine = NgmixMetacal(ShearConfig(options={"ngmix": {"psf": choice}}))
        args = (pairs.stamps[:2], pairs.psf, pairs.pixel_scale, 0.0, np.random.default_rng(0))
        return engine.measure(*args)

    psf = galsim.InterpolatedImage(
        galsim.ImageD(pairs.psf, scale=pairs.pixel_scale), x_interpolant="lanczos15"
    )
    kernel = round_target_psf(psf)
    kspace = measured("kspace")
    assert kspace.meta["reconvolution_psf"].startswith(f"Gaussian sigma {kernel.sigma:.4f}")
    assert measured("azgauss").meta["reconvolution_psf"] == "ngmix 'azgauss'"
    given = NgmixMetacal(ShearConfig(), psf=kernel).measure(
        pairs.stamps[:2], pairs.psf, pairs.pixel_scale, 0.0, np.random.default_rng(0)
    )
    # the same kernel (up to the PSF's normalisation in prepare): the same shapes
    np.testing.assert_allclose(kspace.table["G1_1P"], given.table["G1_1P"], rtol=1e-12)
    with pytest.raises(BlendflagError, match=r"shear\.options\.ngmix\.psf: must be one of"):
        NgmixMetacal(ShearConfig(options={"ngmix": {"psf": "moffat"}}))
    per_object = np.repeat(pairs.psf[None], 2, axis=0)
    with pytest.raises(BlendflagError, match="kspace takes one PSF per image"):
        NgmixMetacal(ShearConfig(options={"ngmix": {"psf": "kspace"}})).measure(
            pairs.stamps[:2], per_object, pairs.pixel_scale, 0.0, np.random.default_rng(0)
        )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), (3.0, 3), (1.5, None), (True, None), ("3", None)],
)
def test_engine_settings_never_change_a_value(value, expected):
    """An integer setting takes whole numbers only: 1.5 is refused, not cut to 1."""
    options = {"metadetect": {"cell_buffer": value}}
    engine = GalSimMetacal(ShearConfig(options=options))
    engine.name = "metadetect"
    if expected is None:
        with pytest.raises(BlendflagError, match=r"metadetect\.cell_buffer: expected int"):
            engine.engine_settings({"cell_buffer": 50})
    else:
        assert engine.engine_settings({"cell_buffer": 50}) == {"cell_buffer": expected}


def test_noise_correction_setting_switches_the_correction_off(pairs):
    rng = np.random.default_rng(5)
    sigma = 10.0
    stamps = pairs.stamps[:4] + rng.normal(0.0, sigma, pairs.stamps[:4].shape).astype(np.float32)
    off = ShearConfig(options={"metacal": {"noise_correction": False}})
    by_setting = GalSimMetacal(off).measure(
        stamps, pairs.psf, pairs.pixel_scale, sigma, np.random.default_rng(1)
    )
    by_argument = GalSimMetacal(ShearConfig(), fixnoise=False).measure(
        stamps, pairs.psf, pairs.pixel_scale, sigma, np.random.default_rng(2)
    )
    corrected = GalSimMetacal(ShearConfig()).measure(
        stamps, pairs.psf, pairs.pixel_scale, sigma, np.random.default_rng(1)
    )
    assert by_setting.meta["fixnoise"] is False and corrected.meta["fixnoise"] is True
    # no correction field is drawn: the rng does not matter, the two ways agree bit for bit
    for column in ("G1_1P", "G1_1M", "S2N_NOSHEAR"):
        np.testing.assert_array_equal(by_setting.table[column], by_argument.table[column])
    # the correction doubles the noise variance: S/N about sqrt(2) higher without it
    ratio = np.asarray(by_setting.table["S2N_NOSHEAR"]) / np.asarray(corrected.table["S2N_NOSHEAR"])
    assert np.all((ratio > 1.2) & (ratio < 1.7))


def test_noise_correction_setting_must_be_a_boolean():
    engine = GalSimMetacal(ShearConfig(options={"metacal": {"noise_correction": "no"}}))
    with pytest.raises(BlendflagError, match="noise_correction: expected bool"):
        _ = engine.settings
