"""Shear three ways: all sources, and without the blends of each flagger.

The comparison runs the catalogue pipeline (detect, cutout, flag_blends) and
then metacalibration of every object, and computes one set of statistics per
selection:

``all``
    every object measured without a metacal flag;
``no_<flagger>_blends``
    the objects the flagger does not call a blend.

On a simulated field with 90-degree rotated pairs, a selection keeps an object
only when its rotated partner is kept too (:func:`pair_complete`), so intrinsic
shape noise cancels; the rule is applied to every metacal version, so the
selection response includes it.

Selections follow metacalibration: a flagger's cut is applied to the metacal
image of each version (noshear, 1p, 1m, 2p, 2m), so the selection response
``R_S`` is measured (design.md section 4). The catalogue columns
``BLEND_<NAME>`` are the flags on the original images (as ``flag`` writes
them); ``MCAL_BLEND_<NAME>`` are the flags on the noshear metacal images that
the selections use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from blendflag.errors import BlendflagError, CatalogueError
from blendflag.pipeline import Context, run_pipeline

#: The default `compare` run: a CFIS-like field with a known shear.
DEFAULT_DATASET = "cfis"
DEFAULT_SHEAR = (0.02, 0.0)
DEFAULT_SEED = 1
#: Galaxies of the default field (half of them the 90-degree rotated copies).
DEFAULT_N_GALAXIES = 10000
#: Noise sigma of the default field (ADU): a deep field (median S/N ~200), so that m is
#: measured to 1% with 10,000 galaxies in a few minutes.
DEFAULT_NOISE = 2.0
#: Largest distance (pixels) between a detection and a true galaxy to match them.
MATCH_RADIUS = 2.0


@dataclass
class FieldInput:
    """The image data `compare` works on.

    Attributes
    ----------
    image, weight, psf : numpy.ndarray
        Science image (ADU), inverse-variance weight (or None), PSF image.
    header : astropy.io.fits.Header or None
    pixel_scale : float
        Arcsec per pixel.
    catalogue : blendflag.catalog.Catalogue or None
        A user catalogue; None detects sources.
    true_shear : tuple or None
        The applied shear of a simulated field.
    truth : astropy.table.Table or None
        The simulated galaxies (positions, PAIR_ID).
    noise_sigma : float or None
        Known noise sigma (ADU), for simulated fields.
    reference_noise : float or None
        Noise sigma (ADU) of the depth at which the truth defines blends (the
        preset's ``default_noise``), for network flaggers with a reference
        plane; None takes the image's noise.
    description : dict
        Where the data came from (for the JSON).
    """

    image: np.ndarray
    weight: np.ndarray | None
    psf: np.ndarray
    header: object = None
    pixel_scale: float = 1.0
    catalogue: object = None
    true_shear: tuple | None = None
    truth: Table | None = None
    noise_sigma: float | None = None
    reference_noise: float | None = None
    description: dict = field(default_factory=dict)


def simulated_input(
    dataset=DEFAULT_DATASET,
    n_galaxies=DEFAULT_N_GALAXIES,
    shear=DEFAULT_SHEAR,
    seed=DEFAULT_SEED,
    noise=DEFAULT_NOISE,
    workers=None,
    progress=False,
    stamp_size=51,
):
    """A simulated field with 90-degree rotated pairs, as :class:`FieldInput`.

    Galaxy centres stay half a stamp (``stamp_size // 2 + 1`` pixels) inside
    each half, so no stamp reaches into the other half.
    """
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.galaxies import label_reference_noise
    from blendflag.simulate.presets import load_dataset

    preset = load_dataset(dataset)
    fld = simulate_field(
        dataset,
        n_galaxies=n_galaxies,
        shear=shear,
        seed=seed,
        rotated_pairs=True,
        noise=noise,
        workers=workers,
        progress=progress,
        margin=int(stamp_size) // 2 + 1,
    )
    reference = label_reference_noise(preset) or fld.noise_sigma or preset.default_noise
    return FieldInput(
        image=fld.image,
        weight=fld.weight,
        psf=fld.psf,
        header=None,
        pixel_scale=fld.pixel_scale,
        true_shear=tuple(fld.shear),
        truth=fld.truth,
        noise_sigma=fld.noise_sigma,
        reference_noise=reference,
        description={
            "dataset": fld.dataset,
            "n_galaxies": len(fld.truth),
            "shear": list(fld.shear),
            "seed": seed,
            "noise_sigma": fld.noise_sigma,
            "reference_noise": reference,
            "rotated_pairs": True,
            "margin": int(stamp_size) // 2 + 1,
            "image_size": list(fld.image.shape[::-1]),
        },
    )


def file_input(image, psf, catalogue=None, weight=None, pixel_scale=None):
    """The user's image, PSF, optional catalogue and weight, as :class:`FieldInput`.

    Raises
    ------
    CatalogueError
        Unreadable files, a catalogue without positions or positions outside
        the image, a PSF that is not a small 2-d image.
    """
    from pathlib import Path

    from blendflag.catalog import read_catalogue
    from blendflag.images import load_image_and_weight, read_image
    from blendflag.shear import pixel_scale_from_header
    from blendflag.stamps import check_positions

    img, wgt, header = load_image_and_weight(image, weight)
    psf_img, psf_header = read_image(psf, "PSF image")
    if not np.all(np.isfinite(psf_img)) or psf_img.sum() <= 0:
        raise CatalogueError(f"PSF image {Path(psf).name} has NaN pixels or no positive flux")
    if max(psf_img.shape) > 256:
        raise CatalogueError(
            f"PSF image {Path(psf).name} is {psf_img.shape[1]}x"
            f"{psf_img.shape[0]}: expected a PSF stamp, not an image"
        )
    cat = None
    if catalogue is not None:
        cat = read_catalogue(catalogue)
        for col in ("X_IMAGE", "Y_IMAGE"):
            if col not in cat.colnames:
                raise CatalogueError(
                    f"{Path(catalogue).name} has no {col} column: compare needs source positions"
                )
        x, y = cat.positions()
        check_positions(x, y, img.shape)
    scale = pixel_scale or pixel_scale_from_header(header) or pixel_scale_from_header(psf_header)
    if scale is None:
        raise CatalogueError(
            "no pixel scale in the image header (CD/CDELT/PIXSCALE): give --pixel-scale"
        )
    return FieldInput(
        image=img,
        weight=wgt,
        psf=psf_img,
        header=header,
        pixel_scale=scale,
        catalogue=cat,
        description={
            "image": str(image),
            "psf": str(psf),
            "catalogue": str(catalogue) if catalogue else None,
            "weight": str(weight) if weight else None,
        },
    )


def match_truth(table: Table, truth: Table, radius: float = MATCH_RADIUS) -> np.ndarray:
    """Index of the true galaxy nearest each detection (within ``radius`` px), or -1."""
    x = np.asarray(table["X_IMAGE"], dtype=float)
    y = np.asarray(table["Y_IMAGE"], dtype=float)
    tx = np.asarray(truth["X"], dtype=float)
    ty = np.asarray(truth["Y"], dtype=float)
    order = np.argsort(tx)
    txs, tys = tx[order], ty[order]
    out = np.full(len(x), -1, dtype=np.int64)
    lo = np.searchsorted(txs, x - radius)
    hi = np.searchsorted(txs, x + radius)
    for i in range(len(x)):
        if hi[i] > lo[i]:
            d2 = (txs[lo[i] : hi[i]] - x[i]) ** 2 + (tys[lo[i] : hi[i]] - y[i]) ** 2
            j = int(np.argmin(d2))
            if d2[j] <= radius**2:
                out[i] = order[lo[i] + j]
    return out


def pair_complete(keep: np.ndarray, pid: np.ndarray | None) -> np.ndarray:
    """``keep`` restricted to objects whose rotated partner is kept too.

    A pair counts only when it has exactly two detections and both are kept;
    unmatched detections (unique ids) and broken pairs are dropped. Applied to
    every metacal version alike, so the selection response covers it.
    """
    keep = np.asarray(keep, dtype=bool)
    if pid is None:
        return keep
    _, inverse, members = np.unique(pid, return_inverse=True, return_counts=True)
    kept = np.bincount(inverse, weights=keep.astype(float))
    return keep & (members[inverse] == 2) & (kept[inverse] == 2)


def pair_ids(table: Table, truth: Table | None) -> np.ndarray | None:
    """Rotated-pair id of each detection (unique ids for unmatched ones), or None."""
    if truth is None or "PAIR_ID" not in truth.colnames:
        return None
    match = match_truth(table, truth)
    pid = np.where(match >= 0, np.asarray(truth["PAIR_ID"])[np.maximum(match, 0)], -1)
    pid = pid.astype(np.int64)
    unmatched = pid < 0
    pid[unmatched] = pid.max(initial=0) + 1 + np.arange(unmatched.sum())
    return pid


@dataclass
class CompareResult:
    """Everything `compare` produces."""

    json: dict
    context: Context
    metacal: object
    selection_flags: dict
    sums: dict  # selection name -> (unit sums (n_units, 15), n_good)


def run_compare(
    pm,
    config,
    data: FieldInput,
    flaggers,
    engine_cls,
    *,
    seed: int = 0,
    workers: int = 1,
    scheduler: str | None = None,
    quiet: bool = True,
    n_bootstrap: int | None = None,
    flag_original: bool = True,
) -> CompareResult:
    """Detect, flag, measure and compare the selections.

    Parameters
    ----------
    pm : pluggy.PluginManager
    config : blendflag.config.PipelineConfig
    data : FieldInput
    flaggers : list of blendflag.flaggers.Flagger
    engine_cls : type
        The shear engine class.
    seed : int
        Seed of the noise-correction fields and the bootstrap.
    workers : int
        Processes for metacalibration. [default: 1]
    scheduler : str or None
        Dask scheduler address for metacalibration chunks.
    flag_original : bool
        Also run the flaggers on the original stamps (the pipeline's
        ``flag_blends`` stage: the ``BLEND_<NAME>`` columns of the annotated
        catalogue). The selections use only the flags on the metacal images,
        so a run that writes no catalogue can skip them. [default: True]
    """
    from blendflag.progress import progress
    from blendflag.shear import (
        METACAL_VERSIONS,
        measure_parallel,
        selection_unit_sums,
        statistics_from_sums,
    )

    timings = {}
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    context = Context(
        config=config,
        pm=pm,
        image=data.image,
        weight=data.weight,
        psf=data.psf,
        image_header=data.header,
        catalogue=data.catalogue,
        table=data.catalogue.table if data.catalogue is not None else None,
        rng=rng,
    )
    for flagger in flaggers:  # the depth of the truth's blend definition (simulations)
        flagger.default_reference_noise(data.reference_noise)
    context.flagger_objects = list(flaggers) if flag_original else []
    context.flaggers = [f.name for f in context.flagger_objects]
    context.shear_engine = None  # metacal runs below, chunked and in parallel
    context.results["needs_stamps"] = True  # metacal needs them even without flaggers
    run_pipeline(context)
    timings.update(context.timings)
    n = len(context.table)
    if n == 0:
        raise BlendflagError("no sources detected: nothing to measure")
    if data.noise_sigma is not None and data.noise_sigma > 0:
        noise = np.full(n, data.noise_sigma)
    elif data.weight is not None:
        from blendflag.shear import noise_from_weight

        noise = noise_from_weight(
            data.weight, context.table["X_IMAGE"], context.table["Y_IMAGE"], config.shear.stamp_size
        )
    else:
        from blendflag.stamps import stamp_noise_sigma

        noise = stamp_noise_sigma(context.stamps).astype(np.float64)
    from blendflag.shear import crop_stamps

    stamps = crop_stamps(np.asarray(context.stamps), int(config.shear.stamp_size))
    pid = pair_ids(context.table, data.truth)
    noise_fields = None
    if pid is not None and data.noise_sigma and "ROTATED" in data.truth.colnames:
        match = match_truth(context.table, data.truth)
        rotated = np.where(
            match >= 0, np.asarray(data.truth["ROTATED"])[np.maximum(match, 0)], False
        )
        noise_fields = paired_noise_fields(pid, rotated, noise, stamps.shape[-1], seed)
    t = time.perf_counter()
    bar = progress(total=n, desc="metacal", quiet=quiet, unit="obj")
    try:
        result = measure_parallel(
            engine_cls,
            config.shear,
            stamps,
            data.psf,
            data.pixel_scale,
            noise,
            seed=seed,
            workers=workers,
            return_images=bool(flaggers),
            progress=bar.update,
            scheduler=scheduler,
            noise_fields=noise_fields,
        )
    finally:
        bar.close()
    if context.stamp_flags is not None:
        from blendflag.shear import MCAL_STAMP_FLAGGED

        bad = np.asarray(context.stamp_flags) != 0
        result.table["MCAL_FLAGS"][bad] |= MCAL_STAMP_FLAGGED
    timings["metacal"] = time.perf_counter() - t
    # every flagger on every metacal version: the selections and their response;
    # the reference depth is the original image's, not the metacal images' own
    for flagger in flaggers:
        flagger.default_reference_noise(float(np.median(noise)))
    selection_flags = {}
    for flagger in flaggers:
        t = time.perf_counter()
        selection_flags[flagger.name] = {
            v: np.asarray(flagger.flag_stamps(result.images[v]).flag, dtype=bool)
            for v in METACAL_VERSIONS
        }
        timings[f"select ({flagger.name})"] = time.perf_counter() - t
    result.images = None  # free the 5 x n stamps
    n_boot = n_bootstrap or config.shear.n_bootstrap
    good = result.good
    base = pair_complete(good, pid)
    sums = {"all": selection_unit_sums(result.table, {v: base for v in METACAL_VERSIONS}, pid)}
    for flagger in flaggers:
        masks = {v: pair_complete(good & ~f, pid) for v, f in selection_flags[flagger.name].items()}
        sums[f"no_{flagger.name}_blends"] = selection_unit_sums(result.table, masks, pid)
    selections = []
    for name, (unit_sums, n_good) in sums.items():
        selections.append(
            statistics_from_sums(
                name,
                unit_sums,
                n_good,
                result.step,
                data.true_shear,
                np.random.default_rng(seed + 1),
                n_boot,
            )
        )
    for flagger, entry in zip(flaggers, selections[1:], strict=True):
        entry["fraction_removed"] = (
            float(selection_flags[flagger.name]["noshear"][good].mean()) if good.any() else None
        )
    timings["total"] = time.perf_counter() - t0
    truth_info = None
    if data.truth is not None:
        match = match_truth(context.table, data.truth)
        truth_info = {
            "n_true": len(data.truth),
            "n_detected": n,
            "n_matched": int((match >= 0).sum()),
        }
        if "OVERLAPS" in data.truth.colnames:
            overlapping = np.asarray(data.truth["OVERLAPS"]) >= 0
            matched = match >= 0
            truly_blended = np.zeros(n, bool)
            truly_blended[matched] = overlapping[match[matched]]
            truth_info["fraction_truly_blended"] = float(truly_blended.mean())
            for flagger in flaggers:
                flag = selection_flags[flagger.name]["noshear"]
                truth_info[f"{flagger.name}_flags_true_blends"] = (
                    float(flag[truly_blended].mean()) if truly_blended.any() else None
                )
                truth_info[f"{flagger.name}_flags_isolated"] = (
                    float(flag[~truly_blended].mean()) if (~truly_blended).any() else None
                )
    out = {
        "engine": result.engine,
        "true_shear": list(data.true_shear) if data.true_shear is not None else None,
        "selections": selections,
        "n_objects": n,
        "n_measured": int(good.sum()),
        "n_in_complete_pairs": int(base.sum()) if pid is not None else None,
        "step": result.step,
        "input": data.description,
        "truth": truth_info,
        "flaggers": {f.name: {k: v for k, v, _ in f.provenance()} for f in flaggers},
        "original_images_flagged": bool(flag_original),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "workers": workers,
    }
    _annotate(context, result, selection_flags, pid)
    return CompareResult(
        json=out, context=context, metacal=result, selection_flags=selection_flags, sums=sums
    )


def paired_noise_fields(pid, rotated, noise_sigma, size: int, seed: int) -> np.ndarray:
    """Metacal noise-correction fields turned like the rotated pairs they serve.

    The noise correction adds a pure-noise image to every object; drawn
    independently it doubles the measurement noise of each pair. Here the
    right-hand member of every complete rotated pair gets its partner's field
    turned by the pair's 90 degrees, so that the correction noise cancels in
    the pair as the intrinsic shapes do; every other object gets its own field.
    Each object's correction is still an honest noise field of the right sigma.

    Parameters
    ----------
    pid : numpy.ndarray
        Pair id of every detection (:func:`pair_ids`).
    rotated : numpy.ndarray of bool
        Whether a detection is in the rotated (right) half.
    noise_sigma : numpy.ndarray
        Noise sigma per detection (ADU).
    size : int
        Stamp side (pixels).
    seed : int
        Seed of the fields.

    Returns
    -------
    numpy.ndarray
        ``(n, size, size)`` float32, ADU.
    """
    n = len(pid)
    rng = np.random.default_rng([int(seed), 0x6E6F697365])  # apart from the bootstrap's
    fields = rng.standard_normal((n, size, size), dtype=np.float32)
    order = np.argsort(pid, kind="stable")
    _, first, counts = np.unique(pid[order], return_index=True, return_counts=True)
    for start in first[counts == 2]:
        a, b = order[start], order[start + 1]
        if rotated[a] == rotated[b]:
            continue
        left, right = (a, b) if not rotated[a] else (b, a)
        fields[right] = np.rot90(fields[left], -1)  # the turn of the right half's scene
    return fields * np.asarray(noise_sigma, dtype=np.float32)[:, None, None]


def _annotate(context, result, selection_flags, pid) -> None:
    """Shear and selection columns for ``--catalogue-out``."""
    ann = context.annotation
    for name in result.table.colnames:
        ann.columns[name] = np.asarray(result.table[name])
    for name, flags in selection_flags.items():
        ann.columns[f"MCAL_BLEND_{name.upper()}"] = flags["noshear"]
    if pid is not None:
        ann.columns["PAIR_ID"] = pid.astype(np.int64)
    ann.cards.append(("BF_MCENG", result.engine, "metacalibration engine"))
    ann.cards.append(("BF_MCSTP", result.step, "metacalibration shear step"))


def print_table(data: dict) -> None:
    """The comparison as a table on stdout."""
    rows = data["selections"]
    print(
        f"engine: {data['engine']}   true shear: {data['true_shear']}   "
        f"objects: {data['n_objects']} ({data['n_measured']} measured)"
    )
    head = (
        f"{'selection':<24} {'N':>6} {'kept':>6} {'R11':>6} {'R11_S':>7} {'g1':>9} "
        f"{'g2':>9} {'m':>16} {'c':>16} {'m (no R_S)':>16}"
    )
    print(head)
    print("-" * len(head))

    def pm_(v, e, fmt="{:+.4f}"):
        if v is None:
            return "null"
        return f"{fmt.format(v)}±{e:.4f}" if e is not None else fmt.format(v)

    for r in rows:
        print(
            f"{r['name']:<24} {r['n']:>6} {r['fraction_kept'] or 0:6.3f} "
            f"{r['R11'] or float('nan'):6.3f} {r.get('R11_S') or 0:+7.4f} "
            f"{r['g1'] or float('nan'):+9.5f} {r['g2'] or float('nan'):+9.5f} "
            f"{pm_(r['m'], r['m_err']):>16} {pm_(r['c'], r['c_err'], '{:+.5f}'):>16} "
            f"{pm_(r.get('m_noRS'), r.get('m_noRS_err')):>16}"
        )
