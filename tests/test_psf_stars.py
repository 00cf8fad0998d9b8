"""The stellar locus followed across an image, for PSFEx."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from blendflag.psf.stars import stellar_locus, write_star_catalogue


def _catalogue(rng, n_stars=400, n_galaxies=4000, size=10000.0):
    """Stars whose radius grows 30 % across the image; galaxies larger than the local PSF."""
    x = rng.uniform(1, size, n_stars + n_galaxies)
    y = rng.uniform(1, size, n_stars + n_galaxies)
    psf_radius = 2.0 * (1.0 + 0.3 * x / size) * (1.0 + 0.05 * (y / size) ** 2)
    radius = psf_radius * (1.0 + rng.normal(0.0, 0.01, len(x)))
    grow = 1.0 + np.exp(rng.normal(-0.3, 0.6, n_galaxies))  # 1st percentile about 1.2
    radius[n_stars:] *= grow
    snr = np.exp(rng.uniform(np.log(20), np.log(2000), len(x)))
    flags = (rng.random(len(x)) < 0.05).astype(np.int16) * 2
    star = np.arange(len(x)) < n_stars
    return x, y, radius, snr, flags, star


def test_the_locus_keeps_the_stars_across_a_varying_psf():
    x, y, radius, snr, flags, star = _catalogue(np.random.default_rng(1))
    keep = stellar_locus(x, y, radius, snr, flags)
    eligible = star & (snr >= 50) & (flags == 0)
    assert (keep & star).sum() / keep.sum() > 0.97  # purity
    assert (keep & eligible).sum() / eligible.sum() > 0.95  # completeness
    assert not (keep & ((snr < 50) | (flags != 0))).any()
    # one global FWHM band (PSFEx's SAMPLE_VARIABILITY-like cut) would not separate them
    local = np.abs(radius / np.median(radius[keep]) - 1) < 0.15
    assert (local & ~star & (snr >= 50)).sum() > 0.1 * (local & star).sum()


def test_too_few_candidates_select_nothing():
    x, y, radius, snr, flags, _ = _catalogue(np.random.default_rng(2), 5, 3)
    assert not stellar_locus(x, y, radius, snr, flags).any()


def test_star_catalogue_keeps_every_hdu_and_only_locus_rows(tmp_path):
    x, y, radius, snr, flags, _ = _catalogue(np.random.default_rng(3), 200, 1000)
    imhead = fits.BinTableHDU.from_columns(
        [fits.Column(name="Field Header Card", format="80A", array=np.array(["SIMPLE = T"]))],
        name="LDAC_IMHEAD",
    )
    objects = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="X_IMAGE", format="E", array=x),
            fits.Column(name="Y_IMAGE", format="E", array=y),
            fits.Column(name="FLUX_RADIUS", format="E", array=radius),
            fits.Column(name="SNR_WIN", format="E", array=snr),
            fits.Column(name="FLAGS", format="I", array=flags),
        ],
        name="LDAC_OBJECTS",
    )
    source, target = tmp_path / "cat.ldac", tmp_path / "stars.ldac"
    fits.HDUList([fits.PrimaryHDU(), imhead, objects]).writeto(source)
    n = write_star_catalogue(source, target)
    with fits.open(target) as out, fits.open(source) as original:
        assert [h.name for h in out] == [h.name for h in original]
        assert out["LDAC_IMHEAD"].data[0][0] == "SIMPLE = T"
        assert len(out["LDAC_OBJECTS"].data) == n > 100
        kept = np.isin(
            original["LDAC_OBJECTS"].data["X_IMAGE"], out["LDAC_OBJECTS"].data["X_IMAGE"]
        )
        assert kept[:200].sum() > 0.9 * n
