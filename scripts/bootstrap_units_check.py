"""Do `compare --tiles`'s printed errors match a bootstrap over whole ±g fields?

Usage::

    python scripts/bootstrap_units_check.py --tiles-dir WORK/des_y5_1x/tiles_metadetect \\
        --json out.json

``--tiles-dir`` is a ``compare --tiles --out-dir`` directory (``*.sums.npz``
of ±g fields, any engine). Every selection's m and c are computed twice from
the same stored per-unit sums, with the same estimator as ``compare``:

- ``cells``: units as ``compare --tiles`` draws them (cells x sign, the +g
  and -g cells of one position together: what the JSON prints);
- ``fields``: every unit of a ±g field summed into one, so a draw takes a
  whole field, both signs together (nothing is shared between fields: their
  errors are right when there are enough of them, whatever the cells).

``ratio`` = cells error / fields error; with N fields the fields error is
itself uncertain by about 1 / sqrt(2 (N - 1)).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag.errors import BlendflagError


def load_sums(tiles_dir: Path) -> tuple[list, list]:
    """The stored sums files of a directory and each one's field index."""
    from blendflag.shear.paired import SumsFile

    paths = sorted(tiles_dir.glob("*.sums.npz"))
    if not paths:
        raise BlendflagError(f"{tiles_dir}: no *.sums.npz (a compare --tiles --out-dir)")
    files, fields, index = [], [], {}
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            field = str(data["field"])
        k = index.setdefault(field, len(index))
        files.append(SumsFile.load(path, k << 32))
        fields.append(k)
    return files, fields


def whole_fields(files: list, fields: list) -> dict:
    """``{selection: [UnitSums]}`` with one unit per field (all its cells summed)."""
    from blendflag.shear.paired import UnitSums

    out: dict = {}
    for stored, k in zip(files, fields, strict=True):
        for name, u in stored.selections.items():
            total = u.sums.sum(axis=0, keepdims=True)
            out.setdefault(name, []).append(
                UnitSums(np.array([k]), total, u.n_good, u.sign, u.layout)
            )
    return out


def as_stored(files: list) -> dict:
    """``{selection: [UnitSums]}`` of the files as ``compare --tiles`` combines them."""
    out: dict = {}
    for stored in files:
        for name, u in stored.selections.items():
            out.setdefault(name, []).append(u)
    return out


def compare_units(files: list, fields: list, seed: int, n_boot: int) -> list[dict]:
    """Per selection: m and c with their errors from cells and from whole fields."""
    from blendflag.shear.paired import compare_statistics

    shear = tuple(files[0].sign * g for g in files[0].true_shear)
    step = files[0].step
    cells = compare_statistics(as_stored(files), step, shear, np.random.default_rng(seed), n_boot)
    whole = compare_statistics(
        whole_fields(files, fields), step, shear, np.random.default_rng(seed), n_boot
    )
    rows = []
    for c, f in zip(cells, whole, strict=True):
        row = {"name": c["name"], "n": c["n"], "m": c["m"], "c1": c["c1"]}
        for key in ("m_err", "c1_err", "dm_vs_all_err", "dm_vs_truth_err"):
            row[f"{key}_cells"], row[f"{key}_fields"] = c.get(key), f.get(key)
        a, b = c["m_err"], f["m_err"]
        row["m_err_ratio"] = a / b if a and b else None
        rows.append(row)
    return rows


def _fmt(value, digits=4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles-dir", required=True, type=Path)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.json and not args.json.resolve().parent.is_dir():
            raise BlendflagError(f"--json: no directory {args.json.parent}")
        files, fields = load_sums(args.tiles_dir)
        if any(f.true_shear is None for f in files) or {f.sign for f in files} != {1, -1}:
            raise BlendflagError(f"{args.tiles_dir}: the tiles are not ±g pairs with a shear")
    except BlendflagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = compare_units(files, fields, args.seed, args.bootstrap)
    n_fields = len(set(fields))
    print(f"{n_fields} ±g fields, engine {files[0].engine}, units: {files[0].units}")
    print("selection            m        m_err cells  m_err fields  ratio")
    for r in rows:
        print(
            f"{r['name']:<20} {_fmt(r['m'])}  {_fmt(r['m_err_cells']):>11}  "
            f"{_fmt(r['m_err_fields']):>12}  {_fmt(r['m_err_ratio'], 2)}"
        )
    if args.json:
        from blendflag.commands.common import write_json

        doc = {
            "provenance": provenance(sys.argv),
            "tiles_dir": str(args.tiles_dir),
            "n_fields": n_fields,
            "engine": files[0].engine,
            "units": files[0].units,
            "bootstrap": {"draws": args.bootstrap, "seed": args.seed},
            "selections": rows,
        }
        write_json(doc, str(args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
