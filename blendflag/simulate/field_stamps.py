"""Stamps centred on the detections of simulated survey fields, labelled from the truth.

The study's stamps (:mod:`blendflag.simulate.stamps`) place one or two
galaxies in a stamp by rule. On a survey's sky a detection's neighbours are
whatever the population puts there: faint galaxies under the noise, stars,
bulges and clumpy disks, groups of three or more. :func:`simulate_field_stamps`
draws square fields of a preset (every galaxy its number counts give, down to
the faint limit), detects on each with the detector it is handed (the
pipeline's, so that training and ``compare`` see the same detections), keeps
the detections that match a true galaxy at least half a stamp from the edges,
and cuts a ``stamp_size`` stamp around each.

Labels come from the field's truth at the label's depth (the preset's
``default_noise``, the survey's own; see :mod:`blendflag.simulate.field`), by
the study stamps' rule that no blend hides an invisible companion:
``N_SOURCES`` is the matched galaxy plus the *visible* sources (optimal S/N
of at least ``blend.min_snr`` at that noise) whose footprints overlap its
footprint (``1 + N_OVERLAPS_VISIBLE``), ``LABEL`` is 1 when that is 2 or
more, and ``COUNT_CLASS`` is ``min(N_SOURCES, 4) - 1`` (the classes 1, 2, 3
and 4+). ``N_SOURCES_ALL`` counts every overlapping source, the invisible
ones too (``1 + N_OVERLAPS``: the truth reference of ``compare``).

Randomness: ``numpy.random.default_rng(seed)`` draws one seed per field; each
field is simulated from its own seed, so the stamps do not depend on the
number of workers.
"""

from __future__ import annotations

import numpy as np

from blendflag._runtime.parallel import _resolve_workers, run_chunks
from blendflag.errors import BlendflagError
from blendflag.simulate.presets import DatasetConfig, load_dataset

#: Side of each simulated field, pixels.
FIELD_SIDE = 512
#: Noise realisations added to each noiseless field (each detected and cut on its own).
NOISE_DRAWS = 3
#: Fields of the first round, whose stamps per field size the next rounds.
PILOT_FIELDS = 2
#: Count classes of the network's second output: 1, 2, 3 and 4 or more sources.
COUNT_CLASSES = 4
#: Columns of the truth table copied from the matched galaxy (field truth name, stamp name).
_GALAXY_COLUMNS = (
    ("FLUX", "FLUX1"),
    ("HLR", "HLR1"),
    ("MAG", "MAG1"),
    ("B2T", "B2T1"),
    ("SERSIC_N", "SERSIC_N1"),
    ("E1_INTRINSIC", "E1_1"),
    ("E2_INTRINSIC", "E2_1"),
)


def count_class(n_sources) -> np.ndarray:
    """The count class (0-3 for 1, 2, 3, 4+ sources) of each number of sources.

    Parameters
    ----------
    n_sources : array_like of int
        Sources whose footprints overlap the central object's, itself included (>= 1).

    Returns
    -------
    numpy.ndarray
        int16 in 0..3.
    """
    n = np.asarray(n_sources, dtype=np.int64)
    return (np.clip(n, 1, COUNT_CLASSES) - 1).astype(np.int16)


def simulate_field_stamps(
    dataset,
    n: int,
    seed: int,
    detect,
    noise=None,
    workers=None,
    field_side: int = FIELD_SIDE,
    blend_fraction: float | None = None,
):
    """Labelled stamps around the detections of simulated survey fields.

    Parameters
    ----------
    dataset : str, path-like or DatasetConfig
        A preset with ``galaxy.population: counts`` (``cfis_survey``,
        ``euclid_survey``, ``lsst_y10``, ``des_y5``) or any other.
    n : int
        Stamps wanted (> 0); fields are simulated until there are enough.
    seed : int
        Seed of the field seeds (>= 0).
    detect : callable
        ``detect(image, weight) -> Table`` with ``X_IMAGE``, ``Y_IMAGE``
        (1-based pixels); module-level (picklable) for workers, e.g.
        :func:`blendflag.pipeline.stages.detect_with_plugins` with its config bound.
    noise : float or None
        Noise sigma of the fields (ADU); None: the preset's ``default_noise``.
        The labels stay at the preset's depth.
    workers : int or None
        Worker processes (see :func:`blendflag._runtime.parallel.run_chunks`).
    field_side : int
        Side of each field, pixels. [default: 512]
    blend_fraction : float or None
        Share of blends wanted (in (0, 1)): fields are simulated until there
        are enough blends, and isolated stamps are left out at random. None
        keeps the sky's own share. [default: None]

    Returns
    -------
    stamps : numpy.ndarray
        float32 ``(n, S, S)``, ADU, S the preset's ``stamp_size``.
    truth : astropy.table.Table
        One row per stamp: ``LABEL`` (int16), ``N_SOURCES``, ``COUNT_CLASS``,
        ``SEPARATION`` (pixels to the centre of the source overlapping most, 0
        without one), ``NOISE_SIGMA`` and ``ISOPHOTE`` (ADU), ``FIELD_SEED``,
        ``X``, ``Y`` (1-based field pixels of the detection), ``SNR`` (optimal
        S/N of the central galaxy alone at the field's noise) and the matched
        galaxy's ``FLUX1``, ``HLR1``, ``MAG1`` (with counts), ``B2T1``,
        ``SERSIC_N1``, ``E1_1``, ``E2_1``.
    """
    from astropy.table import Table, vstack

    config = load_dataset(dataset)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise BlendflagError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BlendflagError(f"seed must be a non-negative integer, got {seed!r}")
    if blend_fraction is not None:
        if not 0.0 < float(blend_fraction) < 1.0:
            raise BlendflagError(f"blend_fraction must be in (0, 1), got {blend_fraction!r}")
        return _with_blend_fraction(
            config, n, int(seed), detect, noise, workers, field_side, float(blend_fraction)
        )
    rng = np.random.default_rng(int(seed))
    stamps, tables = [], []
    done = 0
    while done < n:
        # a pilot round, then as many fields as its stamps per field say are needed
        n_fields = _fields_wanted(n - done, done / len(stamps) if stamps else None)
        seeds = rng.integers(0, 2**31 - 1, size=n_fields)
        tasks = [(config, int(s), detect, noise, field_side) for s in seeds]
        results = run_chunks(_field_stamps, tasks, _resolve_workers(workers, n_fields * 250))
        for s, t in results:
            stamps.append(s)
            tables.append(t)
        done = sum(len(s) for s in stamps)
    x = np.concatenate(stamps)[:n]
    truth = vstack(tables, metadata_conflicts="silent")[:n]
    truth.meta.update(
        {"DATASET": config.name, "SEED": int(seed), "NSTAMPS": int(n), "KIND": "fieldstamps"}
    )
    return x, Table(truth, masked=False)


def _fields_wanted(missing: int, per_field: float | None) -> int:
    """Fields to simulate for ``missing`` stamps: :data:`PILOT_FIELDS` before any is known."""
    if per_field is None:
        return PILOT_FIELDS
    return max(1, int(np.ceil(1.1 * missing / max(per_field, 1.0))))


def _with_blend_fraction(config, n, seed, detect, noise, workers, side, fraction, rounds=20):
    """``n`` field stamps, a ``fraction`` of them blends (see :func:`simulate_field_stamps`).

    Rounds of at least 500 stamps (seeds ``seed * 1000 + r``) are drawn until
    there are enough blends; then blends and isolated stamps are drawn at
    random without replacement (short of blends after ``rounds``, all are kept).
    """
    from astropy.table import vstack

    xs, ts = [], []
    for r in range(rounds):
        x, t = simulate_field_stamps(
            config, max(n, 500), seed * 1000 + r, detect, noise, workers, side
        )
        xs.append(x)
        ts.append(t)
        if sum(int(np.sum(tt["LABEL"])) for tt in ts) >= fraction * n:
            break
    x, t = np.concatenate(xs), vstack(ts, metadata_conflicts="silent")
    rng = np.random.default_rng([seed, 0x626C])
    is_blend = np.asarray(t["LABEL"]) > 0
    n_blend = min(round(fraction * n), int(is_blend.sum()))
    n_blend = max(n_blend, n - int((~is_blend).sum()))
    chosen = np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(is_blend), n_blend, replace=False),
                rng.choice(np.flatnonzero(~is_blend), n - n_blend, replace=False),
            ]
        )
    )
    t = t[chosen]
    t.meta.update({"SEED": int(seed), "NSTAMPS": int(n), "BLENDFRC": fraction})
    return x[chosen], t


def _field_stamps(config: DatasetConfig, field_seed: int, detect, noise, side: int):
    """One field's stamps and truth rows, ``NOISE_DRAWS`` noise draws of it (run in a worker).

    The field is drawn once without noise (its truth's labels are at the
    preset's depth either way); each noise draw is detected and cut on its own.
    """
    from astropy.table import vstack

    from blendflag.simulate.field import simulate_field
    from blendflag.truth import match_truth

    rng = np.random.default_rng([field_seed, 0x6E6F])
    n_galaxies = max(1, int(rng.poisson(_density(config) * (side * config.pixel_scale / 60) ** 2)))
    field = simulate_field(
        config, n_galaxies=n_galaxies, seed=field_seed, noise=0, size=side, margin=2
    )
    sigma = float(config.default_noise if noise is None else noise)
    stamps, tables = [], []
    for _ in range(NOISE_DRAWS):
        image = field.image + rng.normal(0.0, sigma, field.image.shape).astype(np.float32)
        weight = np.full(image.shape, 1.0 / sigma**2, np.float32)
        table = detect(image, weight)
        match = match_truth(table, field.truth)
        keep, ix, iy = _usable(table, match, field.truth, image.shape, config.stamp_size)
        half = config.stamp_size // 2
        cut = [
            image[j - half : j + half + 1, i - half : i + half + 1]
            for i, j in zip(ix, iy, strict=True)
        ]
        stamps.append(np.stack(cut) if cut else np.zeros((0, config.stamp_size, config.stamp_size)))
        tables.append(_stamp_truth(field, match[keep], ix + 1.0, iy + 1.0, config, sigma))
    return np.concatenate(stamps).astype(np.float32), vstack(tables, metadata_conflicts="silent")


def _density(config: DatasetConfig) -> float:
    """Galaxies per arcmin^2: the number counts' (to the faint limit) or ``field.density``."""
    from blendflag.simulate.population import galaxy_density, uses_counts

    return galaxy_density(config.galaxy.counts) if uses_counts(config) else config.field.density


def _usable(table, match, truth, shape, size: int):
    """Detections matched to a true galaxy (not a star), a half stamp from the edges.

    Returns
    -------
    keep : numpy.ndarray
        Indices into ``table``.
    ix, iy : numpy.ndarray
        Their nearest pixels (0-based), the stamps' centres.
    """
    x = np.rint(np.asarray(table["X_IMAGE"], dtype=float) - 1.0).astype(int)
    y = np.rint(np.asarray(table["Y_IMAGE"], dtype=float) - 1.0).astype(int)
    half = size // 2
    ny, nx = shape
    good = (x >= half) & (y >= half) & (x < nx - half) & (y < ny - half) & (match >= 0)
    if "STAR" in truth.colnames:
        good &= ~np.asarray(truth["STAR"], dtype=bool)[np.maximum(match, 0)]
    keep = np.flatnonzero(good)
    return keep, x[keep], y[keep]


def _stamp_truth(field, rows, x, y, config: DatasetConfig, sigma: float):
    """Truth rows of one field's stamps (see :func:`simulate_field_stamps`)."""
    from astropy.table import Table

    from blendflag.simulate.galaxies import isophote_level

    truth = field.truth
    n_src = 1 + np.asarray(truth["N_OVERLAPS_VISIBLE"], dtype=np.int64)[rows]
    best = np.asarray(truth["OVERLAPS_VISIBLE"], dtype=np.int64)[rows]
    tx, ty = np.asarray(truth["X"], float), np.asarray(truth["Y"], float)
    sep = np.where(
        best >= 0,
        np.hypot(tx[np.maximum(best, 0)] - tx[rows], ty[np.maximum(best, 0)] - ty[rows]),
        0.0,
    )
    out = Table()
    out["LABEL"] = (n_src >= 2).astype(np.int16)
    out["KIND"] = np.where(n_src >= 2, "blend", "single").astype("U9")
    out["N_SOURCES"] = n_src.astype(np.int16)
    out["COUNT_CLASS"] = count_class(n_src)
    out["N_SOURCES_ALL"] = (1 + np.asarray(truth["N_OVERLAPS"], dtype=np.int64)[rows]).astype(
        np.int16
    )
    out["SEPARATION"] = sep.astype(np.float32)
    out["NOISE_SIGMA"] = np.full(len(rows), sigma, np.float32)
    out["ISOPHOTE"] = np.full(len(rows), isophote_level(config, config.default_noise), np.float32)
    out["FIELD_SEED"] = np.full(len(rows), field.seed, np.int64)
    out["X"] = np.asarray(x, np.float32)
    out["Y"] = np.asarray(y, np.float32)
    out["SNR"] = _optimal_snr(truth, rows, config, sigma)
    for source, name in _GALAXY_COLUMNS:
        if source in truth.colnames:
            out[name] = np.asarray(truth[source], dtype=np.float64)[rows]
    return out


def _optimal_snr(truth, rows, config: DatasetConfig, sigma: float) -> np.ndarray:
    """Optimal S/N of each central galaxy alone: flux / (sigma sqrt(4 pi) r_eff) in pixels.

    The Gaussian approximation with the PSF-convolved half-light radius
    (``HLR`` in quadrature with half the PSF FWHM), the same order as the
    study stamps' ``SNR``.
    """
    flux = np.asarray(truth["FLUX"], dtype=float)[rows]
    hlr = np.asarray(truth["HLR"], dtype=float)[rows]
    fwhm = float(getattr(config.psf, "fwhm", 0.7))
    r = np.hypot(hlr, fwhm / 2.0) / config.pixel_scale / 1.1774  # Gaussian sigma, pixels
    if sigma <= 0:
        return np.full(len(rows), np.inf, np.float32)
    return (flux / (sigma * np.sqrt(4 * np.pi) * r)).astype(np.float32)
