"""Where per-object m comes from: objects detected under both shears, and those of one only.

Usage::

    python scripts/detection_split.py --work WORK/lsst_y10_1x --fields 16 --json out.json

``--work`` is a configuration directory of ``scripts/literature_check.py``
(±g fields ``seed<k>/{plus,minus}`` and their per-object metacal tiles). Each
measured object that passes the shear catalogue's cuts on its noshear values
(no star, by the truth) is matched to the nearest true galaxy within 2 px
(``blendflag.truth.match_truth``; only galaxies down to ``--mag-limit`` when
given). The objects are then split:

- ``common``: its true galaxy is matched and kept in the +g and the -g image
  alike: m of these is the measurement's, detection left aside;
- ``one_sign``: matched to a galaxy that no object of the other image matches
  or keeps: the detections that change with the shear;
- ``unmatched``: no true galaxy within 2 px;
- ``all_but_one_sign``: ``all`` without ``one_sign``: its difference to
  ``all`` is what the shear-dependent detections contribute to m.

m of each (g = sum e1 / sum R11 per sign, no R_S) with a bootstrap over
the ±g fields, drawn jointly for every split, so the errors of differences
are those of the differences.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from blendflag._runtime.provenance import provenance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from literature_check import m_from_sums

SPLITS = ("all", "common", "one_sign", "unmatched", "all_but_one_sign")


def identity_split(ids: np.ndarray, other_ids: np.ndarray) -> dict:
    """Masks of :data:`SPLITS` for one image's kept objects.

    Parameters
    ----------
    ids : numpy.ndarray
        True galaxy of each kept object of this image (-1: unmatched).
    other_ids : numpy.ndarray
        True galaxies of the other image's kept objects.

    Returns
    -------
    dict
        ``{split: bool mask over ids}``.
    """
    matched = ids >= 0
    common = matched & np.isin(ids, other_ids[other_ids >= 0])
    return {
        "all": np.ones(len(ids), dtype=bool),
        "common": common,
        "one_sign": matched & ~common,
        "unmatched": ~matched,
        "all_but_one_sign": ~(matched & ~common),
    }


def kept_objects(table, truth, cuts, step: float, mag_limit=None):
    """``(true galaxy id, e1, R11)`` of the objects that pass the cuts and are no star."""
    from astropy.table import Table

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
    ok &= np.asarray(table["S2N_NOSHEAR"]) >= cuts.s2n_min
    ok &= np.asarray(table["T_NOSHEAR"]) >= cuts.t_ratio_min * np.asarray(table["T_PSF"])
    if "STAR" in truth.colnames:
        ok &= ~((ids >= 0) & np.asarray(truth["STAR"], dtype=bool)[np.maximum(ids, 0)])
    r11 = (np.asarray(table["G1_1P"]) - np.asarray(table["G1_1M"])) / (2 * step)
    return ids[ok], np.asarray(table["G1_NOSHEAR"])[ok], r11[ok]


def field_split_sums(root: Path, seeds, mag_limit=None) -> np.ndarray:
    """``(fields, splits, 2, 3)``: per field, split and sign (+, -) objects, sum e1, sum R11."""
    from blendflag.config import load_pipeline_config
    from blendflag.simulate.field_io import read_truth

    config = load_pipeline_config(None).shear
    sums = np.zeros((len(seeds), len(SPLITS), 2, 3))
    for i, seed in enumerate(seeds):
        objects = {}
        for sign in ("plus", "minus"):
            table = _tile_of(root, seed, sign)
            truth, _ = read_truth(root / f"seed{seed}" / sign / "truth.fits")
            objects[sign] = kept_objects(table, truth, config.cuts, config.step, mag_limit)
        for j, (sign, other) in enumerate((("plus", "minus"), ("minus", "plus"))):
            ids, e1, r11 = objects[sign]
            masks = identity_split(ids, objects[other][0])
            for k, name in enumerate(SPLITS):
                b = masks[name]
                sums[i, k, j] = (b.sum(), e1[b].sum(), r11[b].sum())
    return sums


def _tile_of(root: Path, seed: int, sign: str):
    """The per-object tile catalogue of ``seed<seed>/<sign>`` (named as ``compare --tiles`` did)."""
    from astropy.io import fits

    from blendflag.tiling.tile_list import read_tiles

    image = root / f"seed{seed}" / sign / "image.fits"
    for tile in read_tiles(str(root / "seed*" / "*" / "image.fits")):
        if Path(tile.image) == image:
            return fits.getdata(root / "tiles_metacal" / f"{tile.name}.fits", "LDAC_OBJECTS")
    raise FileNotFoundError(f"no tile of {image}")


def split_table(sums: np.ndarray, rng, n_boot: int) -> list[dict]:
    """m of every split, bootstrap over fields (the same draws for all), and each minus ``all``.

    A split without objects in a sign has ``m`` None (and no errors).
    """
    draws = [rng.integers(0, len(sums), len(sums)) for _ in range(n_boot)]
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = np.array(
            [[m_from_sums(sums[d, k].sum(axis=0)) for d in draws] for k in range(len(SPLITS))]
        )
    rows = []
    for k, name in enumerate(SPLITS):
        total = sums[:, k].sum(axis=0)
        measured = bool(total[:, 0].all())
        rows.append(
            {
                "split": name,
                "n_plus": int(total[0, 0]),
                "n_minus": int(total[1, 0]),
                "m": m_from_sums(total) if measured else None,
                "m_err": float(np.nanstd(boots[k])) if measured else None,
                "minus_all_err": float(np.nanstd(boots[k] - boots[0])) if measured else None,
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="configuration directory")
    parser.add_argument("--fields", type=int, required=True, help="±g fields, seeds --seed...")
    parser.add_argument("--seed", type=int, default=100, help="first field seed [100]")
    parser.add_argument("--mag-limit", type=float, default=None, help="match galaxies down to")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    root, seeds = Path(args.work), list(range(args.seed, args.seed + args.fields))
    missing = [k for k in seeds if not (root / f"seed{k}" / "minus" / "truth.fits").is_file()]
    if args.fields < 2 or missing:
        print(f"error: {root} lacks fields {missing or ''} (give --fields >= 2)", file=sys.stderr)
        return 2
    try:
        sums = field_split_sums(root, seeds, args.mag_limit)
    except (OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = split_table(sums, np.random.default_rng(0), args.bootstrap)
    for r in rows:
        m = "n/a" if r["m"] is None else f"{r['m']:+.4f} ± {r['m_err']:.4f}"
        print(f"{r['split']:16s} N+ {r['n_plus']:6d} N- {r['n_minus']:6d}  m {m}")
    if args.json:
        from blendflag.commands.common import write_json

        document = {
            "provenance": provenance(),
            "work": str(root),
            "fields": args.fields,
            "mag_limit": args.mag_limit,
            "bootstrap": {"unit": "a ±g field, every split together", "draws": args.bootstrap},
            "what": "per-object m (noshear cuts, no R_S) of the objects kept under both shears "
            "(common, by truth identity), of one shear only, and unmatched",
            "splits": rows,
        }
        write_json(document, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
