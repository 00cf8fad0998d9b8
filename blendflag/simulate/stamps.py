"""Labelled sets of postage stamps: blends, singles and separated pairs.

:func:`simulate_stamps` draws ``n`` postage stamps of ``stamp_size`` pixels
(51 for the packaged presets, the original study's size), each made by
:class:`~blendflag.simulate.stamp_maker.StampMaker` (the blend criterion and
the placement of companions are described there), with Gaussian noise of
sigma ``NOISE_SIGMA`` (ADU) and background 0, and returns them with a truth
table. :func:`read_stamps` reads the file ``blendflag-shear simulate`` writes.

Randomness and workers
----------------------
``numpy.random.default_rng(seed)`` draws the order of kinds (shuffled), the
noise sigmas and one 63-bit seed per stamp; each stamp draws everything else
(parameters, positions, noise) from its own generator. The output is therefore
the same for any number of worker processes. Workers are started with the
``spawn`` method and ``OMP_NUM_THREADS=1`` (see :mod:`blendflag._runtime.parallel`).

GalSim is imported inside the functions, never at import time.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from blendflag._runtime.parallel import _resolve_workers, run_chunks
from blendflag.errors import BlendflagError
from blendflag.simulate.galaxies import isophote_level
from blendflag.simulate.population import uses_counts
from blendflag.simulate.presets import DatasetConfig, load_dataset
from blendflag.simulate.stamp_maker import cached_maker

#: Default proportions of (blend, single, separated) stamps.
DEFAULT_FRACTIONS = (0.5, 0.25, 0.25)
#: Stamp kinds, in the order of ``fractions``.
KINDS = ("blend", "single", "separated")
#: Stamps per task sent to a worker process.
CHUNK_SIZE = 250


def _simulate_chunk(config: DatasetConfig, kinds, sigmas, seeds):
    """Draw a chunk of stamps (run in a worker or serially). Returns (stamps, columns)."""
    maker = cached_maker(config)
    n, size = len(kinds), config.stamp_size
    stamps = np.empty((n, size, size), dtype=np.float32)
    cols = {name: np.zeros(n, dtype=np.float64) for name in _FLOAT_COLUMNS}
    cols["OVERLAP_PIX"] = np.zeros(n, dtype=np.int32)
    extra = COUNTS_COLUMNS if uses_counts(config) else {}
    for name in extra:
        for k in (1, 2):
            cols[f"{name}{k}"] = np.zeros(n, dtype=np.float64)
    for i in range(n):
        rng = np.random.default_rng(int(seeds[i]))
        stamps[i], rec = maker.make(KINDS[int(kinds[i])], float(sigmas[i]), rng)
        cols["ISOPHOTE"][i] = isophote_level(config, float(sigmas[i]))
        p1, p2 = rec["p1"], rec["p2"]
        cols["X1"][i], cols["Y1"][i] = rec["x1"] + 1.0, rec["y1"] + 1.0
        cols["FLUX1"][i], cols["HLR1"][i] = p1["flux"], p1["hlr"]
        cols["E1_1"][i], cols["E2_1"][i] = p1["g1"], p1["g2"]
        cols["SERSIC_N1"][i], cols["B2T1"][i] = p1["n"], p1["b2t"]
        cols["SNR"][i] = rec["snr"]
        for name, key in extra.items():
            cols[f"{name}1"][i] = p1[key]
            if p2 is not None:
                cols[f"{name}2"][i] = p2[key]
        if p2 is not None:
            cols["X2"][i], cols["Y2"][i] = rec["x2"] + 1.0, rec["y2"] + 1.0
            cols["FLUX2"][i], cols["HLR2"][i] = p2["flux"], p2["hlr"]
            cols["E1_2"][i], cols["E2_2"][i] = p2["g1"], p2["g2"]
            cols["SERSIC_N2"][i], cols["B2T2"][i] = p2["n"], p2["b2t"]
            cols["SNR2"][i] = rec["snr2"]
            cols["SEPARATION"][i] = math.hypot(rec["x2"] - rec["x1"], rec["y2"] - rec["y1"])
            cols["OVERLAP_PIX"][i] = rec["overlap"]
    return stamps, cols


_FLOAT_COLUMNS = (
    "ISOPHOTE",
    "SEPARATION",
    "FLUX1",
    "FLUX2",
    "SNR",
    "SNR2",
    "X1",
    "Y1",
    "X2",
    "Y2",
    "HLR1",
    "HLR2",
    "E1_1",
    "E2_1",
    "E1_2",
    "E2_2",
    "SERSIC_N1",
    "SERSIC_N2",
    "B2T1",
    "B2T2",
)

#: The ``counts`` population's further parameters (truth column stem: key),
#: written for each source (``MAG1``, ``MAG2``, ...) so that
#: :func:`~blendflag.simulate.stamp_maker.render_components` redraws them.
COUNTS_COLUMNS = {
    "MAG": "mag",
    "BULGE_HLR": "bulge_hlr",
    "KNOT_FRAC": "knot_frac",
    "N_KNOTS": "n_knots",
    "KNOT_SEED": "knot_seed",
}

#: Units of the truth columns.
TRUTH_UNITS = {
    "SEPARATION": "pix",
    "ISOPHOTE": "adu",
    "FLUX1": "adu",
    "FLUX2": "adu",
    "NOISE_SIGMA": "adu",
    "X1": "pix",
    "Y1": "pix",
    "X2": "pix",
    "Y2": "pix",
    "HLR1": "arcsec",
    "HLR2": "arcsec",
}


def _noise_sigmas(config: DatasetConfig, noise, n: int, rng) -> np.ndarray:
    if noise is None:
        return np.full(n, config.default_noise, dtype=np.float64)
    if isinstance(noise, (list, tuple, np.ndarray)):
        choices = np.asarray([_noise_sigmas(config, s, 1, rng)[0] for s in noise], np.float64)
        if choices.size == 0:
            raise BlendflagError("noise: give at least one sigma (ADU)")
        return choices[rng.integers(0, len(choices), size=n)]
    if isinstance(noise, str):
        if noise.strip().lower() == "grid":
            grid = np.asarray(config.noise_grid, dtype=np.float64)
            return grid[rng.integers(0, len(grid), size=n)]
        try:
            noise = float(noise)
        except ValueError:
            raise BlendflagError(
                f"noise must be a positive number (ADU) or 'grid', got {noise!r}"
            ) from None
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating, np.integer)):
        raise BlendflagError(f"noise must be a positive number (ADU) or 'grid', got {noise!r}")
    if not (math.isfinite(float(noise)) and float(noise) > 0):
        raise BlendflagError(f"noise sigma must be positive and finite, got {noise!r}")
    return np.full(n, float(noise), dtype=np.float64)


def kind_counts(n: int, fractions=DEFAULT_FRACTIONS) -> dict:
    """Exact numbers of (blend, single, separated) stamps: rounded, remainder to blends."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or sum(fr) <= 0:
        raise BlendflagError(
            f"fractions must be three non-negative numbers (blend, single, separated), got "
            f"{fractions!r}"
        )
    if abs(sum(fr) - 1.0) > 1e-6:
        raise BlendflagError(f"fractions must sum to 1, got {fractions!r} (sum {sum(fr):g})")
    n_single = round(n * fr[1])
    n_sep = round(n * fr[2])
    if n_single + n_sep > n:
        n_sep = n - n_single
    return {"blend": n - n_single - n_sep, "single": n_single, "separated": n_sep}


def simulate_stamps(
    dataset, n, seed, noise=None, fractions=DEFAULT_FRACTIONS, workers=None, progress=False
):
    """Simulate labelled postage stamps of blends, singles and separated pairs.

    Parameters
    ----------
    dataset : str, path-like or DatasetConfig
        Preset name (``"great3"``, ``"euclid"``, ``"cfis"``), YAML path, or config.
    n : int
        Number of stamps (> 0).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives identical arrays.
    noise : None, float, "grid" or list of float
        None: the preset's ``default_noise``; a number: that Gaussian sigma in
        ADU for every stamp; ``"grid"``: each stamp draws its sigma uniformly
        from the preset's ``noise_grid``; a list: each stamp draws one of these
        sigmas (ADU) uniformly. [default: None]
    fractions : (float, float, float)
        Proportions of (blend, single, separated) stamps, summing to 1. Counts
        are rounded, the remainder going to blends. [default: (0.5, 0.25, 0.25)]
    workers : int or None
        Worker processes; None runs serially below 2000 stamps, else uses the
        idle cores (``os.cpu_count()`` minus the load average, at least 1).
        The result does not depend on it. [default: None]
    progress : bool
        Show a progress bar on a terminal. [default: False]

    Returns
    -------
    stamps : numpy.ndarray
        float32, shape (n, S, S) with S the preset's ``stamp_size``, in ADU,
        noise added, background 0.
    truth : astropy.table.Table
        One row per stamp: ``LABEL`` (int16, 1 blend / 0 not), ``KIND``
        (blend / single / separated), ``N_SOURCES``, ``SEPARATION`` (pixels, 0
        for singles), ``FLUX1``, ``FLUX2`` (ADU, 0 for singles), ``SNR``
        (optimal signal-to-noise of the central source, sqrt(sum I^2) / sigma),
        ``NOISE_SIGMA`` (ADU), then ``OVERLAP_PIX`` (pixels above the isophote
        in both sources), ``SNR2``, positions ``X1, Y1, X2, Y2`` (1-based stamp
        pixels), ``HLR1, HLR2`` (arcsec), intrinsic shapes ``E1_1, E2_1, E1_2,
        E2_2`` (reduced shear), ``SERSIC_N1/2``, ``B2T1/2`` and ``STAMP_SEED``.

    Raises
    ------
    BlendflagError
        Bad ``n``, ``noise``, ``fractions`` or ``workers``; ConfigError for a bad dataset.
    """
    from astropy.table import Table

    config = load_dataset(dataset)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise BlendflagError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BlendflagError(f"seed must be a non-negative integer, got {seed!r}")
    n = int(n)
    counts = kind_counts(n, fractions)
    workers = _resolve_workers(workers, n)

    rng = np.random.default_rng(int(seed))
    kinds = np.repeat(
        np.arange(3, dtype=np.int8), [counts["blend"], counts["single"], counts["separated"]]
    )
    kinds = rng.permutation(kinds)
    sigmas = _noise_sigmas(config, noise, n, rng)
    seeds = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)

    tasks = [
        (config, kinds[i : i + CHUNK_SIZE], sigmas[i : i + CHUNK_SIZE], seeds[i : i + CHUNK_SIZE])
        for i in range(0, n, CHUNK_SIZE)
    ]
    bar = None
    if progress:
        from blendflag._runtime.progress import progress as make_bar

        bar = make_bar(total=n, desc="simulate", unit="stamp")
    try:
        results = run_chunks(
            _simulate_chunk,
            tasks,
            workers,
            on_done=(lambda r: bar.update(len(r[0]))) if bar else None,
        )
    finally:
        if bar is not None:
            bar.close()

    stamps = np.concatenate([r[0] for r in results]) if len(results) > 1 else results[0][0]
    cols = {k: np.concatenate([r[1][k] for r in results]) for k in results[0][1]}
    kind_names = np.array(KINDS)[kinds]
    truth = Table()
    truth["LABEL"] = (kinds == 0).astype(np.int16)
    truth["KIND"] = kind_names.astype("U9")
    truth["N_SOURCES"] = np.where(kinds == 1, 1, 2).astype(np.int16)
    truth["SEPARATION"] = cols["SEPARATION"].astype(np.float32)
    truth["FLUX1"] = cols["FLUX1"]
    truth["FLUX2"] = cols["FLUX2"]
    truth["SNR"] = cols["SNR"].astype(np.float32)
    truth["NOISE_SIGMA"] = sigmas.astype(np.float32)
    truth["OVERLAP_PIX"] = cols["OVERLAP_PIX"]
    truth["ISOPHOTE"] = cols["ISOPHOTE"].astype(np.float32)
    truth["SNR2"] = cols["SNR2"].astype(np.float32)
    for name in _FLOAT_COLUMNS[_FLOAT_COLUMNS.index("X1") :]:  # the sources' parameters
        truth[name] = cols[name]  # float64: render_components redraws them exactly
    for name in cols:
        if name[:-1] in COUNTS_COLUMNS:  # float64 holds the knot seeds (< 2^31) exactly
            truth[name] = cols[name]
    truth["STAMP_SEED"] = seeds
    for name, unit in TRUTH_UNITS.items():
        truth[name].unit = unit
    truth.meta.update(
        {
            "DATASET": config.name,
            "SEED": int(seed),
            "NSTAMPS": n,
            "ISOSIG": config.blend.isophote_nsigma,
            "ISOREF": config.blend.isophote_reference,
        }
    )
    return stamps, truth


def bench_simulation(n: int = 4000, workers=None, dataset="cfis", seed: int = 0) -> dict:
    """Throughput of two-galaxy stamps (half blends, half separated pairs).

    Parameters
    ----------
    n : int
        Stamps to draw. [default: 4000]
    workers : int or None
        Worker processes; None uses every core. [default: None]
    dataset : str or DatasetConfig
        [default: "cfis"]

    Returns
    -------
    dict
        ``stamps_per_s`` (including worker start-up), ``seconds``, ``n``,
        ``workers``, ``cores`` (``os.cpu_count()``), ``dataset``.
    """
    config = load_dataset(dataset)
    cores = os.cpu_count() or 1
    workers = cores if workers is None else workers
    start = time.perf_counter()
    simulate_stamps(config, n, seed, fractions=(0.5, 0.0, 0.5), workers=workers)
    seconds = time.perf_counter() - start
    return {
        "stamps_per_s": n / seconds,
        "seconds": seconds,
        "n": n,
        "workers": workers,
        "cores": cores,
        "dataset": config.name,
    }


#: TRUTH columns every consumer of a stamp file relies on.
REQUIRED_TRUTH = ("LABEL", "KIND", "SEPARATION", "NOISE_SIGMA")


def read_stamps(path):
    """Read a ``simulate`` output file (HDUs ``STAMPS`` and ``TRUTH``).

    Returns
    -------
    stamps : numpy.ndarray
        float32 (n, S, S), ADU.
    truth : astropy.table.Table
    config : DatasetConfig or None
        The resolved dataset config stored in HDU ``CONFIG`` (None if absent).

    Raises
    ------
    CatalogueError
        Missing, unreadable or truncated file; no STAMPS / TRUTH HDU; a TRUTH
        table without the required columns or of the wrong length; NaN pixels.
    """
    from pathlib import Path

    import yaml
    from astropy.table import Table

    from blendflag.config import from_mapping
    from blendflag.errors import CatalogueError
    from blendflag.io.catalog import open_fits

    path = Path(path)
    hdul = open_fits(path, "stamps file")
    names = [h.name for h in hdul]
    for need in ("STAMPS", "TRUTH"):
        if need not in names:
            raise CatalogueError(f"{path.name} has no {need} HDU: not a `simulate` output")
    cube = hdul["STAMPS"].data
    if cube is None or cube.ndim != 3:
        raise CatalogueError(f"{path.name}: STAMPS must be an (n, S, S) cube")
    stamps = np.asarray(cube, dtype=np.float32)
    truth = Table(hdul["TRUTH"].data)
    missing = [c for c in REQUIRED_TRUTH if c not in truth.colnames]
    if missing:
        raise CatalogueError(f"{path.name}: TRUTH has no column {missing[0]}")
    if len(truth) != len(stamps):
        raise CatalogueError(f"{path.name}: {len(stamps)} stamps but {len(truth)} TRUTH rows")
    if not np.all(np.isfinite(stamps)):
        raise CatalogueError(f"{path.name}: STAMPS holds NaN or inf pixels")
    config = None
    if "CONFIG" in names:
        data = yaml.safe_load(str(hdul["CONFIG"].data["YAML"][0]))
        config = from_mapping(DatasetConfig, data, "")
    return stamps, truth, config
