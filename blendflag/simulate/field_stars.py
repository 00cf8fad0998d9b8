"""Stars and the varying PSF of a simulated field (``simulate-field --stars``, ``--varying-psf``).

Stars are point sources drawn with the field's PSF (at their position when
the PSF varies), so that PSFEx can model the PSF from the image as on a real
tile. Their positions and fluxes come from their own random stream
(``(seed, STAR_STREAM)``), so the galaxies and the pixel noise of a field do
not change when stars are added. In the truth they are rows with ``STAR``
true (``PAIR_ID`` -1, no shape columns), so they are never counted as
galaxies.
"""

from __future__ import annotations

import numpy as np

from blendflag.simulate.field_truth import OVERLAP_COLUMNS

#: Random stream of the stars, apart from the galaxies' and the noise's.
STAR_STREAM = 0x53544152
#: Star fluxes, ADU, drawn log-uniformly: bright enough for PSFEx (S/N > 100 at
#: the CFIS preset's default noise), never saturated (no saturation here).
STAR_FLUX = (1.0e4, 1.0e5)


def place_stars(seed: int, n_stars: int, nx: int, ny: int, margin: int, counts=None):
    """Positions (1-based pixels) and fluxes (ADU) of ``n_stars`` stars.

    Uniform over the image, at least ``margin`` pixels from its edges. Fluxes
    log-uniform in :data:`STAR_FLUX`, or with ``counts`` (a
    :class:`~blendflag.simulate.presets.CountsSpec`) from its star counts
    (``star_mags``, ``star_slope``) in the survey's photometry.

    Returns
    -------
    xs, ys, fluxes : numpy.ndarray
    """
    rng = np.random.default_rng([int(seed), STAR_STREAM])
    xs = rng.uniform(margin + 0.5, nx - margin + 0.5, n_stars)
    ys = rng.uniform(margin + 0.5, ny - margin + 0.5, n_stars)
    if counts is None:
        fluxes = np.exp(rng.uniform(np.log(STAR_FLUX[0]), np.log(STAR_FLUX[1]), n_stars))
    else:
        from blendflag.simulate.population import draw_power_law
        from blendflag.simulate.survey_photometry import mag_to_adu

        fluxes = mag_to_adu(
            draw_power_law(rng, n_stars, counts.star_mags, counts.star_slope), counts
        )
    return xs, ys, fluxes


def preset_star_count(config, seed: int, nx: int, ny: int) -> int:
    """Stars of an ``nx`` x ``ny`` field at the preset's ``star_density`` (0 without counts).

    A Poisson draw from the stars' own stream (``(seed, STAR_STREAM, 1)``).
    """
    if config.galaxy.population != "counts":
        return 0
    from blendflag.simulate.population import star_count

    area = nx * ny * (config.pixel_scale / 60.0) ** 2
    return star_count(
        config.galaxy.counts, area, np.random.default_rng([int(seed), STAR_STREAM, 1])
    )


def paste(image: np.ndarray, arr: np.ndarray, x0: int, y0: int, lo: int = 1, hi=None) -> None:
    """Add a stamp whose first pixel is at 1-based ``(x0, y0)``, clipped to columns lo..hi."""
    ny_img, nx_img = image.shape
    hi = nx_img if hi is None else hi
    xa, ya = max(x0, lo), max(y0, 1)
    xb = min(x0 + arr.shape[1] - 1, hi)
    yb = min(y0 + arr.shape[0] - 1, ny_img)
    if xa <= xb and ya <= yb:
        image[ya - 1 : yb, xa - 1 : xb] += arr[ya - y0 : yb - y0 + 1, xa - x0 : xb - x0 + 1]


def append_stars(truth, xs, ys, fluxes):
    """The truth with a ``STAR`` column and one row per star appended (in place order)."""
    from astropy.table import Table, vstack

    truth["STAR"] = np.zeros(len(truth), dtype=bool)
    n = len(xs)
    stars = Table()
    for name in truth.colnames:
        col = truth[name]
        fill = -1 if name in ("OVERLAPS", "OVERLAPS_FIELD", "PAIR_ID") else 0
        stars[name] = np.full(n, fill, dtype=col.dtype)
    stars["ID"] = np.arange(len(truth), len(truth) + n, dtype=truth["ID"].dtype)
    stars["X"], stars["Y"], stars["FLUX"] = xs, ys, fluxes
    stars["STAR"] = True
    out = vstack([truth, stars], metadata_conflicts="silent")
    for name in truth.colnames:
        out[name].unit = truth[name].unit
    out.meta.update(truth.meta)
    return out


def add_psf_columns(truth, psf_at) -> None:
    """``PSF_FWHM`` (arcsec), ``PSF_G1``, ``PSF_G2``: the true PSF at every row's position."""
    x, y = np.asarray(truth["X"]), np.asarray(truth["Y"])
    truth["PSF_FWHM"] = np.asarray(psf_at.fwhm_at(x, y), dtype=np.float64)
    truth["PSF_FWHM"].unit = "arcsec"
    g1, g2 = psf_at.shear_at(x, y)
    truth["PSF_G1"] = np.asarray(g1, dtype=np.float64)
    truth["PSF_G2"] = np.asarray(g2, dtype=np.float64)


def varying_psf_for(config, varying_psf, nx: int, ny: int, n_stars):
    """The :class:`VaryingPSF` of an ``nx`` x ``ny`` field, or None; checks ``n_stars``.

    ``varying_psf`` is None/False (one PSF), True (the default
    :class:`~blendflag.simulate.psf_variation.PSFVariation`) or a PSFVariation.

    Raises
    ------
    BlendflagError
        ``n_stars`` is not a non-negative integer.
    """
    from blendflag.errors import BlendflagError

    if isinstance(n_stars, bool) or not isinstance(n_stars, (int, np.integer)) or n_stars < 0:
        raise BlendflagError(f"n_stars must be a non-negative integer, got {n_stars!r}")
    if varying_psf is None or varying_psf is False:
        return None
    from blendflag.simulate.psf_variation import PSFVariation, VaryingPSF

    variation = PSFVariation() if varying_psf is True else varying_psf
    return VaryingPSF(config.psf, variation, int(nx), int(ny))


def add_stars(image, config, seed, n_stars, margin, psf_at, footprint_lists, thresholds):
    """Draw ``n_stars`` stars into ``image`` and append their footprints (in place).

    ``footprint_lists`` are the galaxies' footprints at the label's and at the
    field's depth and their signals (sqrt(sum I^2), ADU), ``thresholds`` those
    isophotes (ADU; the second None for a noiseless field).

    Returns
    -------
    xs, ys, fluxes : numpy.ndarray
        1-based positions and fluxes (ADU) of the stars (empty without stars).
    """
    from blendflag.simulate.field_draw import draw_stars, footprint, stamp_signal

    footprints, field_footprints, signals = footprint_lists
    thresh, thresh_field = thresholds
    ny, nx = image.shape
    counts = config.galaxy.counts if config.galaxy.population == "counts" else None
    xs, ys, fluxes = place_stars(seed, int(n_stars), nx, ny, margin, counts)
    for x0, y0, arr, fx0, fy0, mask in draw_stars(config, fluxes, xs, ys, thresh, psf_at):
        footprints.append((fx0, fy0, mask))
        signals.append(stamp_signal(arr))
        if thresh_field is not None:
            field_footprints.append(footprint(arr, x0, y0, thresh_field))
        paste(image, arr, x0, y0)
    return xs, ys, fluxes


def centre_psf_image(config, psf_at) -> np.ndarray:
    """The varying PSF at the image centre, drawn like the preset's PSF image (float32, sum 1)."""
    model = psf_at.psf_model(config.pixel_scale)
    return model.image_at((psf_at.nx + 1) / 2, (psf_at.ny + 1) / 2).astype(np.float32)


def add_stars_and_psf_columns(truth, stars, overlaps, psf_at):
    """The galaxies' truth with the star rows (``STAR``) and the PSF columns, when there are any.

    ``overlaps`` holds ``OVERLAPS``, ``N_OVERLAPS``, ``OVERLAPS_FIELD``,
    ``N_OVERLAPS_FIELD``, ``OVERLAPS_VISIBLE`` and ``N_OVERLAPS_VISIBLE`` of
    galaxies and stars together.
    """
    if len(stars[0]):
        truth = append_stars(truth, *stars)
        names = OVERLAP_COLUMNS
        for name, values in zip(names, overlaps, strict=True):
            truth[name] = np.asarray(values).astype(truth[name].dtype)
    if psf_at is not None:
        add_psf_columns(truth, psf_at)
    return truth
