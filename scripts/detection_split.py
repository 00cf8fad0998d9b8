"""Where per-object m comes from: objects detected under both shears, and those of one only.

Usage::

    python scripts/detection_split.py --work WORK/lsst_y10_1x --fields 16 --json out.json

``--work`` is a configuration directory of ``scripts/literature_check.py``
(±g fields ``seed<k>/{plus,minus}`` and their per-object metacal tiles). Each
measured object (no star, by the truth) is matched to the nearest true galaxy within 2 px
(``blendflag.truth.match_truth``; only galaxies down to ``--mag-limit`` when
given). The objects are then split:

- ``common``: its true galaxy is measured (detected, not a star, no flag)
  in the +g and the -g image alike: m of these is the measurement's,
  detection left aside;
- ``one_sign``: matched to a galaxy that no measured object of the other
  image matches: the detections that change with the shear;
- ``unmatched``: no true galaxy within 2 px;
- ``all_but_one_sign``: ``all`` without ``one_sign``: its difference to
  ``all`` is what the shear-dependent detections contribute to m;
- ``isolated`` and ``blended``: matched to a galaxy whose footprint at the
  field's depth (the truth's ``OVERLAPS_FIELD``) overlaps no other in either
  image of the pair, or that does in one of them at least: a selection that
  is the same under +g and -g, so it adds no shear response of its own;
- ``common_kept``: ``common`` that the other image also keeps through its
  cuts (the definition of ``common`` before 2026-12-07). It is a selection on
  the other image's sheared S/N and size, which no R_S sees: on the
  literature-check skies it lies +0.03 to +0.05 above ``common``.

The JSON's ``profiles`` describe each split's kept objects: median S/N,
isophotal area and true magnitude, the fraction the deblender split from a
neighbour (SExtractor ``FLAGS`` bit 2), the mean of sign x e1 (their
shape along the shear), the fraction with another detection within 12 px
and the mean of sign x cos(2 phi) of its direction phi (+: the neighbour
lies along the axis the shear stretches; 0 for random directions).

m of each, as ``compare`` gives it (each metacal version cut on its own S/N
and size; g = <e1> / (<R11> + R11_S) per sign), with a bootstrap over the
±g fields drawn jointly for every split, so the errors of differences are
those of the differences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from blendflag._runtime.provenance import provenance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from literature_check import FIELD_SHEAR

SPLITS = (
    "all",
    "common",
    "one_sign",
    "unmatched",
    "all_but_one_sign",
    "isolated",
    "blended",
    "common_kept",
)


def identity_split(
    ids: np.ndarray,
    other_measured: np.ndarray,
    other_kept: np.ndarray,
    isolated: np.ndarray | None = None,
) -> dict:
    """Masks of :data:`SPLITS` for one image's measured objects.

    Parameters
    ----------
    ids : numpy.ndarray
        True galaxy of each measured object of this image (-1: unmatched).
    other_measured : numpy.ndarray
        True galaxies of the other image's measured objects (before the cuts).
    other_kept : numpy.ndarray
        True galaxies of the other image's objects kept by its cuts.
    isolated : numpy.ndarray or None
        Per true galaxy: its footprint overlaps no other in either image of
        the pair (None: every galaxy counts as isolated).

    Returns
    -------
    dict
        ``{split: bool mask over ids}``.
    """
    matched = ids >= 0
    common = matched & np.isin(ids, other_measured[other_measured >= 0])
    lonely = matched if isolated is None else matched & isolated[np.maximum(ids, 0)]
    return {
        "all": np.ones(len(ids), dtype=bool),
        "common": common,
        "one_sign": matched & ~common,
        "unmatched": ~matched,
        "all_but_one_sign": ~(matched & ~common),
        "isolated": lonely,
        "blended": matched & ~lonely,
        "common_kept": matched & np.isin(ids, other_kept[other_kept >= 0]),
    }


#: Columns of the per-split sums: noshear-kept objects, their sum e1 and sum R11,
#: then objects kept on the 1p version's S/N and size and their noshear sum e1, and
#: the same for 1m (the selection response R_S, as ``blendflag.shear.statistics``).
SUM_COLUMNS = ("n", "e1", "R11", "n_1p", "e1_1p", "n_1m", "e1_1m")


def measured_objects(table, truth, cuts, step: float, mag_limit=None) -> dict:
    """The unflagged, non-star objects: true galaxy, e1, R11 and who passes the cuts.

    Returns
    -------
    dict
        ``ids`` (true galaxy, -1: none within 2 px), ``e1``, ``R11``, and
        ``kept``, ``kept_1p``, ``kept_1m``: the cuts (``shear.cuts``) on the
        noshear, 1p and 1m versions' own S/N and T
        (:func:`blendflag.shear.cuts.shear_cut_masks`, as ``compare``).
    """
    from astropy.table import Table

    from blendflag.shear.cuts import shear_cut_masks
    from blendflag.truth import match_truth

    candidates = np.ones(len(truth), dtype=bool)
    if mag_limit is not None and "MAG" in truth.colnames:
        candidates = np.asarray(truth["MAG"]) <= mag_limit
    if "STAR" in truth.colnames:
        candidates |= np.asarray(truth["STAR"], dtype=bool)
    index = np.flatnonzero(candidates)
    match = match_truth(Table(table), truth[index])
    ids = np.where(match >= 0, index[np.maximum(match, 0)], -1)
    ok = np.asarray(table["MCAL_FLAGS"]) == 0
    if "STAR" in truth.colnames:
        ok &= ~((ids >= 0) & np.asarray(truth["STAR"], dtype=bool)[np.maximum(ids, 0)])
    masks, _ = shear_cut_masks(Table(table), cuts, ok)
    out = {
        "ids": ids[ok],
        "e1": np.asarray(table["G1_NOSHEAR"])[ok],
        "R11": ((np.asarray(table["G1_1P"]) - np.asarray(table["G1_1M"])) / (2 * step))[ok],
    }
    for key, version in (("kept", "noshear"), ("kept_1p", "1p"), ("kept_1m", "1m")):
        out[key] = masks[version][ok]
    out["profile"] = _profile_columns(table, truth, ids, ok)
    return out


#: What :func:`split_profiles` describes each split by (medians and fractions).
PROFILE_COLUMNS = ("s2n", "isoarea", "deblended", "true_mag", "close_neighbour")
#: A detection closer than this (pixels; 2.4" at 0.2"/px, twice the shape
#: weight's FWHM) is a close neighbour, whose direction the profiles describe.
NEIGHBOUR_RADIUS = 12.0


def nearest_detection(x, y, radius: float = NEIGHBOUR_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """Per detection: the distance to the nearest other one and cos(2 phi) of its direction.

    ``phi`` is the angle of the separation from the x axis, so cos(2 phi) is
    +1 for a neighbour along x (the axis a +g1 shear stretches) and -1 along
    y. Both are NaN when no other detection lies within ``radius`` pixels.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    order = np.argsort(x)
    xs, ys = x[order], y[order]
    lo, hi = np.searchsorted(xs, xs - radius), np.searchsorted(xs, xs + radius)
    dist, cos2 = np.full(len(x), np.nan), np.full(len(x), np.nan)
    for i in range(len(xs)):
        dx, dy = xs[lo[i] : hi[i]] - xs[i], ys[lo[i] : hi[i]] - ys[i]
        d = np.hypot(dx, dy)
        d[i - lo[i]] = np.inf  # not itself
        j = int(np.argmin(d)) if len(d) else 0
        if len(d) and d[j] <= radius:
            dist[order[i]] = d[j]
            cos2[order[i]] = np.cos(2 * np.arctan2(dy[j], dx[j]))
    return dist, cos2


def _profile_columns(table, truth, ids, ok) -> dict:
    """Per measured object: noshear S/N, isophotal area (pixels), the deblender's
    flag (SExtractor ``FLAGS`` bit 2), its true galaxy's magnitude (NaN: none),
    whether another detection lies within :data:`NEIGHBOUR_RADIUS` and cos(2 phi)
    of that neighbour's direction (:func:`nearest_detection`; NaN: none)."""
    names = set(table.columns.names)

    def column(name):
        return np.asarray(table[name], dtype=float) if name in names else np.full(len(ids), np.nan)

    mag = np.asarray(truth["MAG"], dtype=float) if "MAG" in truth.colnames else None
    true_mag = np.full(len(ids), np.nan)
    if mag is not None:
        true_mag = np.where(ids >= 0, mag[np.maximum(ids, 0)], np.nan)
    deblended = column("FLAGS")
    deblended = np.where(
        np.isfinite(deblended), (np.nan_to_num(deblended).astype(int) & 2) > 0, np.nan
    )
    _, cos2 = nearest_detection(column("X_IMAGE"), column("Y_IMAGE"))
    profile = {
        "s2n": column("S2N_NOSHEAR"),
        "isoarea": column("ISOAREA_IMAGE"),
        "deblended": deblended,
        "true_mag": true_mag,
        "close_neighbour": np.isfinite(cos2).astype(float),
        "neighbour_cos2phi": cos2,
    }
    return {key: value[ok] for key, value in profile.items()}


def split_profiles(per_image: list) -> dict:
    """Per split: median S/N, isophotal area and true magnitude, the deblended fraction,
    the mean of sign x e1 (the shear-aligned shape), the fraction with a close
    neighbour and the mean of sign x cos(2 phi) of that neighbour's direction
    (+: along the axis the shear stretches) of the kept objects.

    ``per_image``: ``(objects, masks, sign)`` of every image (:func:`identity_split`'s masks).
    """
    out = {}
    for name in SPLITS:
        values = {key: [] for key in (*PROFILE_COLUMNS, "sign_e1", "sign_cos2phi")}
        for objects, masks, sign in per_image:
            kept = masks[name] & objects["kept"]
            for key in PROFILE_COLUMNS:
                values[key].append(objects["profile"][key][kept])
            values["sign_e1"].append(sign * objects["e1"][kept])
            values["sign_cos2phi"].append(sign * objects["profile"]["neighbour_cos2phi"][kept])
        joined = {key: np.concatenate(v) for key, v in values.items()}
        out[name] = _describe(joined)
    return out


def _describe(joined: dict) -> dict | None:
    """Medians, the deblended fraction and the mean shear-aligned shape; None when empty."""
    if not len(joined["sign_e1"]):
        return None
    return {
        "median_s2n": _finite(np.median, joined["s2n"]),
        "median_isoarea_pixels": _finite(np.median, joined["isoarea"]),
        "median_true_mag": _finite(np.median, joined["true_mag"]),
        "deblended_fraction": _finite(np.mean, joined["deblended"]),
        "mean_sign_e1": _finite(np.mean, joined["sign_e1"]),
        "mean_sign_e1_err": _finite(_standard_error, joined["sign_e1"]),
        "close_neighbour_fraction": _finite(np.mean, joined["close_neighbour"]),
        "mean_sign_cos2phi_neighbour": _finite(np.mean, joined["sign_cos2phi"]),
        "mean_sign_cos2phi_neighbour_err": _finite(_standard_error, joined["sign_cos2phi"]),
    }


def _standard_error(values: np.ndarray) -> float:
    """The standard error of the mean of ``values`` (objects taken as independent)."""
    return float(np.std(values) / np.sqrt(len(values)))


def _finite(statistic, values) -> float | None:
    """``statistic`` of the finite values (None when there are none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(statistic(values)) if len(values) else None


def split_masks(objects: dict, other: dict, isolated=None) -> dict:
    """:func:`identity_split` of one image's measured objects against the other image's.

    ``isolated``: per true galaxy, isolated in both images.
    """
    kept_other = other["ids"][other["kept"]]
    return identity_split(objects["ids"], other["ids"], kept_other, isolated)


def split_sums(objects: dict, masks: dict) -> np.ndarray:
    """``(splits, 7)`` sums (:data:`SUM_COLUMNS`) of one image's splits (:func:`split_masks`)."""
    e1 = objects["e1"]
    sums = np.zeros((len(SPLITS), len(SUM_COLUMNS)))
    for k, name in enumerate(SPLITS):
        b = masks[name] & objects["kept"]
        p, m = masks[name] & objects["kept_1p"], masks[name] & objects["kept_1m"]
        sums[k] = (
            b.sum(),
            e1[b].sum(),
            objects["R11"][b].sum(),
            p.sum(),
            e1[p].sum(),
            m.sum(),
            e1[m].sum(),
        )
    return sums


def m_with_selection(total: np.ndarray, step: float, shear: float) -> float:
    """m from the (+, -) sums ``(2, 7)``: g = <e1> / (<R11> + R11_S) per sign."""
    n, e1, r11, n_p, e_p, n_m, e_m = total.T
    g = (e1 / n) / (r11 / n + (e_p / n_p - e_m / n_m) / (2 * step))
    return float((g[0] - g[1]) / (2 * shear) - 1)


def field_split_sums(
    root: Path, seeds, mag_limit=None, tiles: str = "tiles_metacal"
) -> tuple[np.ndarray, dict]:
    """``(fields, splits, 2, 7)``: per field, split and sign (+, -) the :data:`SUM_COLUMNS`;
    and each split's profile (:func:`split_profiles`)."""
    from astropy.io import fits

    from blendflag.config import load_pipeline_config
    from blendflag.simulate.field_io import read_truth

    config = load_pipeline_config(None).shear
    paths = tile_paths(root, tiles)
    sums = np.zeros((len(seeds), len(SPLITS), 2, len(SUM_COLUMNS)))
    per_image = []
    for i, seed in enumerate(seeds):
        objects, isolated = {}, True
        for sign in ("plus", "minus"):
            image = root / f"seed{seed}" / sign / "image.fits"
            if image not in paths:
                raise FileNotFoundError(f"no tile of {image}")
            table = fits.getdata(paths[image], "LDAC_OBJECTS")
            truth, _ = read_truth(root / f"seed{seed}" / sign / "truth.fits")
            objects[sign] = measured_objects(table, truth, config.cuts, config.step, mag_limit)
            isolated = isolated & (np.asarray(truth["OVERLAPS_FIELD"]) < 0)
        for j, (sign, other) in enumerate((("plus", "minus"), ("minus", "plus"))):
            masks = split_masks(objects[sign], objects[other], isolated)
            sums[i, :, j] = split_sums(objects[sign], masks)
            per_image.append((objects[sign], masks, 1 - 2 * j))
    return sums, split_profiles(per_image)


def tile_paths(root: Path, tiles: str = "tiles_metacal") -> dict:
    """``{image path: its per-object catalogue in root/tiles}``, as ``compare --tiles`` names it."""
    from blendflag.tiling.tile_list import read_tiles

    found = read_tiles(str(root / "seed*" / "*" / "image.fits"))
    return {Path(t.image): root / tiles / f"{t.name}.fits" for t in found}


def split_table(sums: np.ndarray, rng, n_boot: int, step: float = 0.01) -> list[dict]:
    """m of every split, bootstrap over fields (the same draws for all), and each minus ``all``.

    A split without objects in a sign has ``m`` None (and no errors).
    """
    draws = [rng.integers(0, len(sums), len(sums)) for _ in range(n_boot)]
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = np.array(
            [[_m(sums[d, k].sum(axis=0), step) for d in draws] for k in range(len(SPLITS))]
        )
    rows = []
    with np.errstate(invalid="ignore", divide="ignore"):
        points = [_m(sums[:, k].sum(axis=0), step) for k in range(len(SPLITS))]
    for k, name in enumerate(SPLITS):
        total = sums[:, k].sum(axis=0)
        row = {"split": name, "n_plus": int(total[0, 0]), "n_minus": int(total[1, 0])}
        measured = bool(total[:, 0].all())
        row["m"] = points[k] if measured else None
        row["m_err"] = float(np.nanstd(boots[k])) if measured else None
        for ref in ("all", "common"):  # paired differences, the same draws
            j = SPLITS.index(ref)
            row[f"minus_{ref}"] = points[k] - points[j] if measured else None
            row[f"minus_{ref}_err"] = float(np.nanstd(boots[k] - boots[j])) if measured else None
        rows.append(row)
    return rows


def against_table(sums: np.ndarray, base: np.ndarray, rng, n_boot: int, step: float) -> list:
    """Each split's m minus its m in ``base``: another measurement of the same fields.

    ``sums`` and ``base`` are :func:`field_split_sums` of two tile directories
    (e.g. a diagnostic detection config against the default one); the
    bootstrap draws the same fields for both, so the error is that of the
    difference.
    """
    draws = [rng.integers(0, len(sums), len(sums)) for _ in range(n_boot)]
    rows = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, name in enumerate(SPLITS):
            a, b = sums[:, k].sum(axis=0), base[:, k].sum(axis=0)
            if not (a[:, 0].all() and b[:, 0].all()):
                rows.append({"split": name, "minus_against": None, "minus_against_err": None})
                continue
            diffs = [
                _m(sums[d, k].sum(axis=0), step) - _m(base[d, k].sum(axis=0), step) for d in draws
            ]
            rows.append(
                {
                    "split": name,
                    "m_against": _m(b, step),
                    "n_against": [int(b[0, 0]), int(b[1, 0])],
                    "minus_against": _m(a, step) - _m(b, step),
                    "minus_against_err": float(np.nanstd(diffs)),
                }
            )
    return rows


def _m(total: np.ndarray, step: float) -> float:
    """m of summed (+, -) sums at the fields' shear."""
    return m_with_selection(total, step, FIELD_SHEAR[0])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="configuration directory")
    parser.add_argument("--fields", type=int, required=True, help="±g fields, seeds --seed...")
    parser.add_argument("--seed", type=int, default=100, help="first field seed [100]")
    parser.add_argument("--mag-limit", type=float, default=None, help="match galaxies down to")
    parser.add_argument(
        "--tiles",
        default="tiles_metacal",
        help="the tiles' directory in --work (literature_check.py --config: "
        "tiles_metacal_<stem>) [tiles_metacal]",
    )
    parser.add_argument(
        "--against",
        default=None,
        help="another tiles' directory of the same fields (e.g. tiles_metacal): each split's "
        "m minus its m there, paired over fields",
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", default=None)
    return parser


def _input_error(args, root: Path, seeds: list) -> str | None:
    """What is wrong with the request before any tile is read, or None."""
    missing = [k for k in seeds if not (root / f"seed{k}" / "minus" / "truth.fits").is_file()]
    if args.fields < 2 or missing:
        return f"{root} lacks fields {missing or ''} (give --fields >= 2)"
    if args.json and not Path(args.json).resolve().parent.is_dir():
        return f"--json: no directory {Path(args.json).parent}"
    return None


def _print_rows(rows: list, against: list | None, against_name: str | None) -> None:
    """The splits' m and differences to ``all``, then each split minus ``--against``."""
    for r in rows:
        m = "n/a" if r["m"] is None else f"{r['m']:+.4f} ± {r['m_err']:.4f}"
        d = (
            ""
            if r["m"] is None
            else f"  minus all {r['minus_all']:+.4f} ± {r['minus_all_err']:.4f}"
        )
        print(f"{r['split']:16s} N+ {r['n_plus']:6d} N- {r['n_minus']:6d}  m {m}{d}")
    for r in against or []:
        if r["minus_against"] is not None:
            print(
                f"{r['split']:16s} minus {against_name}: "
                f"{r['minus_against']:+.4f} ± {r['minus_against_err']:.4f}"
            )


def _document(args, root: Path, rows: list, profiles: dict, against: list | None) -> dict:
    """The JSON: provenance, what was split and how, the splits and profiles."""
    document = {
        "provenance": provenance(),
        "work": str(root),
        "tiles": args.tiles,
        "fields": args.fields,
        "mag_limit": args.mag_limit,
        "bootstrap": {"unit": "a ±g field, every split together", "draws": args.bootstrap},
        "what": "per-object m (cuts on each metacal version, R_S included) of the objects "
        "measured under both shears (common, by truth identity), under one shear only, "
        "unmatched, isolated and blended (by the truth's footprints in both images), and "
        "common_kept (common kept by the other image's cuts too)",
        "splits": rows,
        "profiles": profiles,
    }
    if against is not None:
        document["against"] = {"tiles": args.against, "splits": against}
    return document


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    root, seeds = Path(args.work), list(range(args.seed, args.seed + args.fields))
    problem = _input_error(args, root, seeds)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        sums, profiles = field_split_sums(root, seeds, args.mag_limit, args.tiles)
        base = None
        if args.against is not None:
            base, _ = field_split_sums(root, seeds, args.mag_limit, args.against)
    except (OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from blendflag.config import load_pipeline_config

    step = load_pipeline_config(None).shear.step
    rows = split_table(sums, np.random.default_rng(0), args.bootstrap, step)
    against = None
    if base is not None:
        against = against_table(sums, base, np.random.default_rng(1), args.bootstrap, step)
    _print_rows(rows, against, args.against)
    if args.json:
        from blendflag.commands.common import write_json

        write_json(_document(args, root, rows, profiles, against), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
