"""Galaxy populations: the ``counts`` model (magnitudes, photometry, shapes) and the old presets.

The ``counts`` population (``configs/cfis_survey.yaml``) draws magnitudes from
number counts down below the detection limit and turns them into ADU with
surveycodex's numbers; every packaged preset keeps ``loguniform``, whose
fields and stamps must not change by a bit (the values hard-coded below).
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from blendflag.config import configs_dir
from blendflag.errors import ConfigError
from blendflag.simulate import population, survey_photometry
from blendflag.simulate.field import simulate_field
from blendflag.simulate.galaxies import make_psf, sample_galaxy
from blendflag.simulate.presets import load_dataset, with_counts
from blendflag.simulate.stamps import simulate_stamps

PRESET = "cfis_survey"


@pytest.fixture(scope="module")
def counts():
    return load_dataset(PRESET).galaxy.counts


# ---------------------------------------------------------------------------
# Magnitudes from the counts
# ---------------------------------------------------------------------------


def _ks_pvalue(sample: np.ndarray, cdf) -> float:
    """Kolmogorov-Smirnov p-value of ``sample`` against ``cdf``: scipy's, or the asymptotic one."""
    try:
        from scipy import stats
    except ImportError:
        x = np.sort(sample)
        n = len(x)
        f = cdf(x)
        d = max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))
        t = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d  # Stephens' small-n correction
        k = np.arange(1, 101)
        return float(np.clip(2 * np.sum((-1.0) ** (k - 1) * np.exp(-2 * k * k * t * t)), 0, 1))
    return float(stats.kstest(sample, cdf).pvalue)


def test_drawn_magnitudes_follow_the_counts(counts):
    mags = population.draw_magnitudes(np.random.default_rng(2024), 20000, counts)
    assert mags.min() >= counts.bright_mag and mags.max() <= counts.faint_mag
    assert _ks_pvalue(mags, lambda m: population.magnitude_cdf(m, counts)) > 0.01
    # the test has power: magnitudes uniform over the same range are rejected
    flat = np.random.default_rng(1).uniform(counts.bright_mag, counts.faint_mag, 20000)
    assert _ks_pvalue(flat, lambda m: population.magnitude_cdf(m, counts)) < 1e-6


def test_counts_are_the_broken_power_law_and_the_density_their_integral(counts):
    assert counts.faint_mag == pytest.approx(max(counts.depth + 2.5, 27.0)) == 27.35
    assert 10 ** population.log10_counts(25.0, counts) == pytest.approx(31.496)
    step = 1e-3
    for mag, slope in ((19.0, 0.4358), (23.0, 0.3413), (26.0, 0.2456)):
        pair = population.log10_counts([mag, mag + step], counts)
        assert (pair[1] - pair[0]) / step == pytest.approx(slope)
    grid = np.linspace(counts.bright_mag, counts.faint_mag, 200001)
    n = 10 ** population.log10_counts(grid, counts)
    numeric = float(np.sum(0.5 * (n[1:] + n[:-1]) * np.diff(grid)))
    assert population.galaxy_density(counts) == pytest.approx(numeric, rel=1e-6)
    assert 150 < population.galaxy_density(counts) < 250  # per arcmin^2, to r = 27.35


def test_a_density_scales_the_counts_at_every_magnitude(counts):
    """``--density`` on a counts preset draws that many galaxies, the same magnitudes."""
    from blendflag.pipeline.field_input import simulated_preset

    drawn = population.galaxy_density(counts)
    doubled = simulated_preset(PRESET, 2 * drawn).galaxy.counts
    assert population.galaxy_density(doubled) == pytest.approx(2 * drawn, rel=1e-12)
    mags = np.linspace(counts.bright_mag, counts.faint_mag, 7)
    assert np.allclose(
        population.log10_counts(mags, doubled) - population.log10_counts(mags, counts),
        math.log10(2.0),
    )
    assert np.allclose(
        population.magnitude_cdf(mags, doubled), population.magnitude_cdf(mags, counts)
    )


@pytest.mark.parametrize(("mag", "published"), [(22, 3.35), (24, 18.4), (25, 39.6), (27, 157)])
def test_counts_match_the_published_cumulative_counts(counts, mag, published):
    """N(<r) per arcmin^2 of Driver et al. 2016's r-band counts, within 5%."""
    below = dataclasses.replace(counts, faint_below_depth=mag - counts.depth, faint_min=0.0)
    assert population.galaxy_density(below) == pytest.approx(published, rel=0.05)


# ---------------------------------------------------------------------------
# Photometry from surveycodex
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("survey", "band", "exposure"),
    [("CFHTLS", "r", 600.0), ("CFHTLS", "i", None), ("Euclid_VIS", "IE", None),
     ("LSST", "r", None), ("HSC", "i", None), ("DES", "r", None)],
)  # fmt: skip
def test_magnitudes_to_adu_match_surveycodex(survey, band, exposure):
    from surveycodex import get_survey
    from surveycodex.utilities import mag2counts

    spec = SimpleNamespace(survey=survey, filter=band, exposure_time=exposure)
    mag = 16.0  # bright: mag2counts rounds to whole electrons
    expected = mag2counts(mag, survey, band, exposure_time=exposure).value
    assert survey_photometry.mag_to_electrons(mag, spec) == pytest.approx(expected, rel=1e-6)
    gain = get_survey(survey).gain.value
    assert survey_photometry.mag_to_adu(mag, spec) * gain == pytest.approx(expected, rel=1e-6)
    zp = survey_photometry.adu_zero_point(spec)
    assert survey_photometry.mag_to_adu(zp - 2.5, spec) == pytest.approx(10.0)


def test_pixel_noise_is_the_sky_noise_of_the_exposure(counts):
    from surveycodex.utilities import mean_sky_level

    survey, band = survey_photometry.survey_band(counts)
    assert band.full_exposure_time.value == 600.0  # CFIS, not CFHTLS's 2000 s
    sky_electrons = mean_sky_level(survey, band).value
    sigma = survey_photometry.pixel_noise_sigma(counts)
    assert sigma == pytest.approx(math.sqrt(sky_electrons) / survey.gain.value, rel=1e-12)
    assert sigma == pytest.approx(42.286, abs=1e-3)
    # the preset's noise is that sigma, and surveycodex's numbers give CFIS's published depth
    config = load_dataset(PRESET)
    assert config.default_noise == pytest.approx(sigma, rel=1e-3)
    assert survey_photometry.point_source_depth(counts) == pytest.approx(counts.depth, abs=0.1)


def test_the_faintest_galaxies_are_below_the_detection_threshold(counts):
    import galsim

    config = load_dataset(PRESET)
    sigma = config.default_noise
    params = population.draw_population(np.random.default_rng(7), 3000, counts)
    faint = sorted(params, key=lambda p: p["mag"])[-20:]
    bright = [p for p in params if p["mag"] < counts.depth - 2][:5]
    assert min(p["mag"] for p in faint) > counts.depth + 2.0
    psf = make_psf(config)

    def snr(p):
        image = galsim.Convolve(population.galaxy_object(p), psf).drawImage(
            nx=41, ny=41, scale=config.pixel_scale
        )
        arr = image.array.astype(np.float64)
        return math.sqrt(np.sum(arr**2)) / sigma, arr.max() / sigma

    for p in faint:  # neither the optimal nor the peak S/N reaches 5
        assert max(snr(p)) < 5.0
    assert all(snr(p)[0] > 5.0 for p in bright)


# ---------------------------------------------------------------------------
# Sizes, shapes, bulges, knots
# ---------------------------------------------------------------------------


def test_sizes_shapes_bulges_and_knots(counts):
    params = population.draw_population(np.random.default_rng(3), 20000, counts)
    mag = np.array([p["mag"] for p in params])
    hlr = np.array([p["hlr"] for p in params])
    z = np.log(hlr / population.median_hlr(mag, counts)) / counts.size_scatter
    assert abs(np.median(z)) < 0.03 and np.abs(z).max() <= counts.size_clip + 1e-9
    g = np.hypot([p["g1"] for p in params], [p["g2"] for p in params])
    assert g.max() < 1 and 0.22 < math.sqrt(np.mean(g**2) / 2) < 0.28  # sigma_e per component
    b2t = np.array([p["b2t"] for p in params])
    assert np.mean(b2t == 1.0) == pytest.approx(counts.bulge_dominated, abs=0.01)
    assert np.median(b2t[b2t < 1]) == pytest.approx(0.0674, abs=0.01)  # 0.674 sigma of |N|
    knotted = np.array([p["n_knots"] > 0 for p in params])
    assert not knotted[b2t == 1.0].any()
    assert not knotted[mag > counts.smooth_mag].any()  # the faint are drawn smooth
    bright = (b2t < 1) & (mag <= counts.smooth_mag)
    assert np.mean(knotted[bright]) == pytest.approx(counts.knot_galaxies, abs=0.03)
    # the shortcut takes no random numbers: without it the same galaxies, knots added
    unsmoothed = dataclasses.replace(counts, smooth_below_depth=99.0)
    again = population.draw_population(np.random.default_rng(3), 20000, unsmoothed)
    assert [p["mag"] for p in again] == mag.tolist()
    knotted_all = np.array([p["n_knots"] > 0 for p in again])
    assert (knotted_all >= knotted).all() and knotted_all[mag > counts.smooth_mag].any()
    flux = np.array([p["flux"] for p in params])
    np.testing.assert_allclose(flux, survey_photometry.mag_to_adu(mag, counts), rtol=1e-12)


def test_loguniform_is_the_old_draw():
    config = load_dataset("cfis")
    assert config.galaxy.population == "loguniform"
    new = population.draw_galaxy_params(np.random.default_rng(5), 10, config)
    rng = np.random.default_rng(5)
    assert new == [sample_galaxy(rng, config.galaxy) for _ in range(10)]


# ---------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------


def test_a_counts_field_draws_and_its_truth_has_mag(counts):
    field = simulate_field(PRESET, 60, seed=2, rotated_pairs=True, noise=0, shear=(0, 0), n_stars=0)
    truth = field.truth
    old = simulate_field("cfis", 4, seed=2).truth.colnames
    assert truth.colnames == [*old, "MAG"]
    assert str(truth["MAG"].unit) == "mag"
    np.testing.assert_allclose(truth["FLUX"], survey_photometry.mag_to_adu(truth["MAG"], counts))
    assert ((truth["B2T"] >= 0) & (truth["B2T"] <= 1)).all()
    side = math.ceil(math.sqrt(30 / population.galaxy_density(counts)) * 60 / 0.187)
    assert field.image.shape == (side, 2 * side)  # sized by the counts' density
    # the rotated half is the left half turned by 90 degrees, knots included
    left, right = field.image[:, :side], field.image[:, side:]
    np.testing.assert_allclose(right, np.rot90(left, -1), atol=1e-5 * left.max())
    noisy = simulate_field(PRESET, 20, seed=2)
    assert noisy.noise_sigma == pytest.approx(42.29) and np.isfinite(noisy.image).all()


def test_a_counts_field_has_the_presets_stars(counts):
    """Stars from the star counts: a Poisson number at star_density, magnitudes in star_mags."""
    from blendflag.simulate.field_stars import preset_star_count

    config = load_dataset(PRESET)
    side = 20000  # pixels: 4,000 arcmin^2 at 0.187"/px, counted without drawing
    expected = counts.star_density * side * side * (config.pixel_scale / 60.0) ** 2
    n = preset_star_count(config, 4, side, side)
    assert abs(n - expected) < 4 * math.sqrt(expected)  # Poisson
    assert preset_star_count(load_dataset("cfis"), 4, side, side) == 0  # log-uniform: none
    field = simulate_field(PRESET, 100, seed=4, noise=0, n_stars=40)
    stars = field.truth[field.truth["STAR"]]
    assert len(stars) == 40
    mags = survey_photometry.adu_zero_point(counts) - 2.5 * np.log10(stars["FLUX"])
    assert counts.star_mags[0] - 1e-9 <= mags.min() and mags.max() <= counts.star_mags[1] + 1e-9
    # the galaxies and the noise do not depend on the stars
    without = simulate_field(PRESET, 100, seed=4, noise=0, n_stars=0)
    np.testing.assert_array_equal(without.truth["X"], field.truth["X"][~field.truth["STAR"]])


def test_with_counts_changes_one_setting_and_checks_it(counts):
    config = load_dataset(PRESET)
    assert with_counts(config, star_density=0.0).galaxy.counts.star_density == 0.0
    with pytest.raises(ConfigError, match="no setting 'nope'"):
        with_counts(config, nope=1)
    with pytest.raises(ConfigError, match="clustered_fraction"):
        with_counts(config, clustered_fraction=2.0)
    with pytest.raises(ConfigError, match=r"no galaxy\.counts"):
        with_counts(load_dataset("cfis"), star_density=1.0)


def test_dropping_the_faint_keeps_the_others(counts):
    """drop_fainter_than: the brighter galaxies, their positions, pair ids and the noise stay."""
    config = load_dataset(PRESET)
    fewer = with_counts(config, drop_fainter_than=25.0)
    full = simulate_field(config, 400, shear=(0.02, 0.0), seed=3, rotated_pairs=True, n_stars=0)
    cut = simulate_field(fewer, 400, shear=(0.02, 0.0), seed=3, rotated_pairs=True, n_stars=0)
    kept = full.truth[full.truth["MAG"] <= 25.0]
    assert 0 < len(cut.truth) == len(kept) < len(full.truth)
    for name in ("PAIR_ID", "X", "Y", "FLUX", "ROTATED"):
        np.testing.assert_array_equal(cut.truth[name], kept[name])
    # the same noise: the difference of the images is the faint galaxies' light only
    faint_light = full.image - cut.image
    assert faint_light.min() > -1e-3 and faint_light.sum() > 0


# Recorded from commit 1a6ae45 before the population module existed: the
# default (loguniform) fields and stamps of the packaged presets, exactly.
OLD_FIELDS = {
    "cfis": (True, 309046.8526843509, 317766.98590361513, 22.679240955813523, (262, 524)),
    "euclid": (False, 313840.41104561527, 324096.05065855663, 12.728392749083229, (693, 693)),
    "great3": (True, 261751.62254218324, 272519.8705142441, 24.328103833325073, (245, 490)),
}
OLD_PIXELS = {
    "cfis": (3.001427173614502, 8.552080154418945, 0.8614417910575867),
    "euclid": (-12.265351295471191, -5.743505477905273, -29.541393280029297),
    "great3": (-20.092317581176758, 11.540149688720703, 5.136957168579102),
}
OLD_STAMPS = {
    "cfis": (79602.61614418309, 301.3768615722656, 28.197067260742188, 52683.125644391956),
    "great3": (88360.17084401101, 371.861328125, 5.040297508239746, 52683.125644391956),
}


@pytest.mark.parametrize("name", sorted(OLD_FIELDS))
def test_old_presets_fields_are_unchanged(name):
    pairs, image_sum, flux_sum, hlr_sum, shape = OLD_FIELDS[name]
    field = simulate_field(name, n_galaxies=40, seed=7, rotated_pairs=pairs)
    assert field.image.shape == shape
    assert float(np.sum(field.image, dtype=np.float64)) == image_sum
    ny, nx = shape
    pixels = (field.image[ny // 2, nx // 2], field.image[10, 20], field.image[ny - 5, nx - 7])
    assert tuple(float(v) for v in pixels) == OLD_PIXELS[name]
    assert float(np.sum(field.truth["FLUX"], dtype=np.float64)) == flux_sum
    assert float(np.sum(field.truth["HLR"], dtype=np.float64)) == hlr_sum
    assert "MAG" not in field.truth.colnames


@pytest.mark.parametrize("name", sorted(OLD_STAMPS))
def test_old_presets_stamps_are_unchanged(name):
    stamps, truth = simulate_stamps(name, 6, seed=5, workers=1)
    total, centre, corner, flux_sum = OLD_STAMPS[name]
    assert float(np.sum(stamps, dtype=np.float64)) == total
    assert (float(stamps[0, 25, 25]), float(stamps[5, 3, 40])) == (centre, corner)
    assert float(np.sum(truth["FLUX1"], dtype=np.float64)) == flux_sum


# ---------------------------------------------------------------------------
# Preset validation
# ---------------------------------------------------------------------------


def _preset_with(tmp_path, change):
    data = yaml.safe_load((configs_dir() / f"{PRESET}.yaml").read_text())
    change(data)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d["galaxy"].update(population="cosmos"), "galaxy.population: unknown"),
        (lambda d: d["galaxy"].pop("counts"), "galaxy.counts: required"),
        (lambda d: d["galaxy"]["counts"].pop("depth"), "galaxy.counts.depth: required"),
        (lambda d: d["galaxy"]["counts"].update(survey="CFIS"), "galaxy.counts.survey: unknown"),
        (lambda d: d["galaxy"]["counts"].update(filter="V"), "galaxy.counts.filter: CFHTLS has"),
        (lambda d: d.update(pixel_scale=0.2), "pixel_scale: 0.2 arcsec differs"),
        (lambda d: d["galaxy"]["counts"].update(counts_slopes=[0.3]), "counts_slopes: give 3"),
        (lambda d: d["galaxy"]["counts"].update(bright_mag=28), "bright_mag: must be brighter"),
        (lambda d: d["galaxy"]["counts"].update(knot_flux=[0.2, 0.95]), "knot_flux: expected"),
        (lambda d: d["galaxy"]["counts"].update(size_clip="two"), "size_clip: expected"),
    ],
)
def test_counts_keys_are_validated(tmp_path, change, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_dataset(str(_preset_with(tmp_path, change)))
    assert "\n" not in str(info.value)


def test_counts_fields_shear_every_separation_by_default():
    """The default ``shear_group_link: .inf``: a uniform shear of every separation
    in each image half (x stretched by (1 + g) / (1 - g) from -g to +g)."""
    preset = load_dataset(PRESET)
    assert math.isinf(preset.galaxy.counts.shear_group_link)
    kw = {"seed": 5, "rotated_pairs": True, "n_stars": 0}
    a = simulate_field(preset, 600, shear=(0.02, 0.0), **kw).truth
    b = simulate_field(preset, 600, shear=(-0.02, 0.0), **kw).truth
    for half in (False, True):
        rows = np.flatnonzero(np.asarray(a["ROTATED"]) == half)
        i, j = rows[0], rows[1:]
        dxp, dxm = a["X"][j] - a["X"][i], b["X"][j] - b["X"][i]
        dyp, dym = a["Y"][j] - a["Y"][i], b["Y"][j] - b["Y"][i]
        wide, tall = np.abs(dxm) > 1, np.abs(dym) > 1
        np.testing.assert_allclose(dxp[wide] / dxm[wide], 1.02 / 0.98, rtol=1e-6)
        np.testing.assert_allclose(dyp[tall] / dym[tall], 0.98 / 1.02, rtol=1e-6)
        assert wide.sum() > 100 and tall.sum() > 100


def test_shear_groups_keep_bright_galaxies_on_their_pixels(counts):
    """±g counts fields sheared in groups (``shear_group_link: 15``): a bright
    galaxy alone among bright ones keeps its pixels.

    Friends-of-friends of every galaxy percolates at ~200 per arcmin^2 (groups
    hundreds of pixels across whose members move by pixels between +g and
    -g, so the noise under them no longer cancels); the faint join their
    nearest bright galaxy's group, sheared about the bright members only.
    """
    from blendflag.simulate.field_layout import COUNTS_GROUP_LINK

    preset = with_counts(load_dataset(PRESET), shear_group_link=COUNTS_GROUP_LINK)
    kw = {"seed": 5, "rotated_pairs": True, "n_stars": 0}
    plus = simulate_field(preset, 2000, shear=(0.02, 0.0), **kw)
    minus = simulate_field(preset, 2000, shear=(-0.02, 0.0), **kw)
    a, b = plus.truth, minus.truth
    moved = np.hypot(a["X"] - b["X"], a["Y"] - b["Y"])
    bright = np.asarray(a["MAG"]) <= counts.depth
    assert np.mean(moved[bright] < 1e-9) > 0.6  # most bright galaxies do not move
    # no galaxy moves by more than the shear of the largest plausible group
    assert moved.max() < 0.1 * 20 * COUNTS_GROUP_LINK
    # a faint galaxy next to a lone bright one is sheared about it
    ax, ay, bx, by = (np.asarray(t[c], float) for t in (a, b) for c in ("X", "Y"))
    lone = np.flatnonzero(bright & (moved < 1e-9))
    checked = 0
    for i in lone[:200]:
        near = np.flatnonzero(
            ~bright & (np.hypot(ax - ax[i], ay - ay[i]) < 0.5 * COUNTS_GROUP_LINK)
        )
        for j in near:
            dp = np.array([ax[j] - ax[i], ay[j] - ay[i]])
            dm = np.array([bx[j] - bx[i], by[j] - by[i]])
            # +g stretches x by (1 + g) / (1 - g) relative to -g (area-preserving)
            assert dp[0] / dm[0] == pytest.approx(1.02 / 0.98, rel=1e-6) or abs(dm[0]) < 1e-6
            checked += 1
    assert checked > 5


def test_clustering_moves_only_the_faint_next_to_bright_ones(counts):
    """clustered_fraction: faint galaxies crowd the bright; nothing else changes."""
    config = load_dataset(PRESET)
    clustered = with_counts(config, clustered_fraction=0.8)
    plain = simulate_field(config, 800, seed=6, n_stars=0)
    crowd = simulate_field(clustered, 800, seed=6, n_stars=0)
    a, b = plain.truth, crowd.truth
    np.testing.assert_array_equal(a["MAG"], b["MAG"])
    bright = np.asarray(a["MAG"]) <= counts.depth
    np.testing.assert_array_equal(a["X"][bright], b["X"][bright])

    def nearest_bright(t):
        x, y = np.asarray(t["X"], float), np.asarray(t["Y"], float)
        d = np.hypot(x[~bright, None] - x[None, bright], y[~bright, None] - y[None, bright])
        return np.median(d.min(axis=1))

    scale = counts.cluster_scale / config.pixel_scale
    assert nearest_bright(b) < min(2.5 * scale, 0.6 * nearest_bright(a))
    # the same noise (its own stream): the images differ by the moved faint light only
    assert np.median(np.abs(plain.image - crowd.image)) < 0.05 * plain.noise_sigma
