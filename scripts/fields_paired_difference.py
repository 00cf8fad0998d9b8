"""Two measurements of the same ±g fields: m of each and their paired difference.

The literature check (``scripts/literature_check.py``) measures the same
fields with per-object metacal (``tiles_metacal``), metadetection
(``tiles_metadetect``) and diagnostic configs (``tiles_metacal_<stem>``), and
reports each on its own. This script reads the stored per-tile sums of two of
them, keeps the fields of seeds ``--seed`` .. ``--seed + --fields - 1``, makes
each ±g field one bootstrap unit (both images, every cell or stamp summed) and
bootstraps the two selections with one set of draws, so the error of
``m(other) - m(base)`` is that of the difference. The unpaired error (the two
errors in quadrature) is printed beside it: their ratio is what the pairing
gains.

Usage::

    python scripts/fields_paired_difference.py WORK/lsst_y10_1x --seed 100 --fields 16 \\
        --json docs/results/fields_paired_lsst_y10.json

Each measurement also says how its m scatters between fields and how much
of that scatter comes from the shape and how much from the response
(``per_field``, :func:`field_scatter`).

``--base`` and ``--other`` are ``TILES_DIRECTORY:SELECTION`` (defaults
``tiles_metacal:all`` and ``tiles_metadetect:all``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blendflag._runtime.provenance import provenance

#: The name the base measurement takes in the bootstrap (its reference for ``dm_vs_all``).
BASE = "all"
OTHER = "other"
UNIT = "one ±g field: both images, every cell or stamp of each summed"


class InputError(ValueError):
    """Bad input: printed as one ``error:`` line, exit 2."""


def parse_measurement(text: str) -> tuple[str, str]:
    """``(tiles directory, selection)`` from ``DIR:SELECTION`` (``DIR`` alone: ``all``)."""
    directory, _, selection = text.partition(":")
    if not directory or "/" in directory:
        raise InputError(f"{text!r}: give a tiles directory name of the work directory")
    return directory, selection or "all"


def field_seed(key: str) -> int:
    """The seed of a simulated field's key ``DATASET:SEED:NGAL``."""
    parts = key.split(":")
    if len(parts) != 3 or not parts[1].lstrip("-").isdigit():
        raise InputError(f"field key {key!r} is not a simulated field's DATASET:SEED:NGAL")
    return int(parts[1])


@dataclass
class Measurement:
    """One tile set's selection on the wanted fields: its images' units and what they share."""

    tiles: Path
    selection: str
    parts: list = field(default_factory=list)
    step: set = field(default_factory=set)
    shear: set = field(default_factory=set)
    engine: set = field(default_factory=set)
    fields: set = field(default_factory=set)

    def single(self, what: str):
        """The one value of ``step`` or ``shear``; an input error when the tiles disagree."""
        values = getattr(self, what)
        if len(values) != 1:
            raise InputError(f"{self.tiles}: the tiles' {what} is not one value ({sorted(values)})")
        return next(iter(values))


def field_sums(tiles: Path, selection: str, seeds: set) -> Measurement:
    """Per image, the selection's sums of the wanted fields, each image one unit keyed by seed."""
    from blendflag.shear.paired import SumsFile, UnitSums

    paths = sorted(tiles.glob("*.sums.npz"))
    if not paths:
        raise InputError(f"{tiles}: no *.sums.npz tiles")
    out = Measurement(tiles, selection)
    for path in paths:
        try:
            stored = SumsFile.load(path)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path}: not a readable sums file ({exc})") from exc
        seed = field_seed(stored.field)
        if seed not in seeds:
            continue
        if selection not in stored.selections:
            raise InputError(f"{path}: no selection {selection!r}")
        sums = stored.selections[selection]
        total = sums.sums.sum(axis=0, keepdims=True)
        out.parts.append(UnitSums(np.array([seed]), total, sums.n_good, stored.sign, sums.layout))
        out.step.add(stored.step)
        out.engine.add(stored.engine)
        out.fields.add((seed, stored.sign))
        if stored.true_shear is not None:
            out.shear.add(abs(float(stored.true_shear[0])))
    return out


def _checked(measurements: list, seeds: set) -> tuple[float, float]:
    """``(step, shear)`` after checking every set covers each wanted field's two images."""
    wanted = {(s, sign) for s in seeds for sign in (1, -1)}
    for measurement in measurements:
        missing = sorted({s for s, _ in wanted - measurement.fields})
        if missing:
            raise InputError(f"{measurement.tiles}: no tiles of the fields of seeds {missing}")
    step, shear = ({m.single(what) for m in measurements} for what in ("step", "shear"))
    if len(shear) != 1 or len(step) != 1:
        raise InputError("the tile sets were sheared or measured with different steps")
    return step.pop(), shear.pop()


def field_scatter(parts: list, step: float, shear: float) -> dict:
    """How m scatters from field to field, and how much of it the shape and the response carry.

    Per field, y = (<e1>(+g) - <e1>(-g)) / 2 and x = (R(+g) + R(-g)) / 2, so
    that m_field = y / x / g - 1. To first order about the means over fields,
    m_field - m = dy / (x g) - y dx / (x^2 g): ``m_sd_shape`` and
    ``m_sd_response`` are the standard deviations (ddof 1) of the two terms,
    ``m_sd`` that of their sum, the scatter the ratio of the summed fields
    has (a field with R near zero makes y / x itself useless, not this).
    """
    from blendflag.shear.statistics import shape_and_response

    rows = {(int(u.keys[0]), u.sign): u.sums[0] for u in parts}
    seeds = sorted({seed for seed, _ in rows})
    layout = parts[0].layout
    shape, response = {}, {}
    for sign in (1, -1):
        table = np.array([rows[(seed, sign)] for seed in seeds])
        shape[sign], response[sign] = shape_and_response(table, step, layout)
    y = (shape[1] - shape[-1]) / 2
    x = (response[1] + response[-1]) / 2
    shape_term = (y - y.mean()) / (x.mean() * shear)
    response_term = -y.mean() * (x - x.mean()) / (x.mean() ** 2 * shear)
    return {
        "m_sd": float(np.std(shape_term + response_term, ddof=1)),
        "m_sd_shape": float(np.std(shape_term, ddof=1)),
        "m_sd_response": float(np.std(response_term, ddof=1)),
        "R11_mean": float(x.mean()),
        "R11_sd": float(np.std(x, ddof=1)),
        "objects_per_field": float(np.mean([u.sums[0, 0] for u in parts])),
    }


def paired_difference(root: Path, base: tuple, other: tuple, seeds: set, n_boot: int, rng):
    """The document's measurements: both selections and ``m(other) - m(base)``."""
    from blendflag.shear.paired import compare_statistics

    read = {}
    for name, (directory, selection) in ((BASE, base), (OTHER, other)):
        if not (root / directory).is_dir():
            raise InputError(f"{root / directory}: no such tiles directory")
        read[name] = field_sums(root / directory, selection, seeds)
    step, shear = _checked(list(read.values()), seeds)
    selections = {name: measurement.parts for name, measurement in read.items()}
    entries = {
        e["name"]: e for e in compare_statistics(selections, step, (shear, 0.0), rng, n_boot)
    }
    out = {}
    for label, name in (("base", BASE), ("other", OTHER)):
        measurement, entry = read[name], entries[name]
        out[label] = {
            "tiles": measurement.tiles.name,
            "selection": measurement.selection,
            "engine": sorted(measurement.engine),
            **{k: entry[k] for k in ("m", "m_err", "c1", "c1_err", "R11", "n")},
            "per_field": field_scatter(measurement.parts, step, shear),
        }
    dm, dm_err = entries[OTHER]["dm_vs_all"], entries[OTHER]["dm_vs_all_err"]
    unpaired = float(np.hypot(out["base"]["m_err"], out["other"]["m_err"]))
    out["other_minus_base"] = {"dm": dm, "dm_err": dm_err, "unpaired_err": unpaired}
    out["true_shear"], out["step"] = shear, step
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", help="one configuration's work directory, e.g. WORK/lsst_y10_1x")
    parser.add_argument("--seed", type=int, default=100, help="first field seed [100]")
    parser.add_argument("--fields", type=int, default=16, help="±g fields [16]")
    parser.add_argument("--base", default="tiles_metacal:all", help="DIR:SELECTION [%(default)s]")
    parser.add_argument(
        "--other", default="tiles_metadetect:all", help="DIR:SELECTION [%(default)s]"
    )
    parser.add_argument("--bootstrap", type=int, default=500, help="draws [500]")
    parser.add_argument("--rng-seed", type=int, default=1, help="the bootstrap's seed [1]")
    parser.add_argument("--json", required=True, help="write the document here")
    return parser


def _run(args) -> dict:
    from blendflag.shear.paired import MIN_UNITS

    if args.fields < MIN_UNITS or args.bootstrap < 2:
        raise InputError(f"--fields must be at least {MIN_UNITS} (units) and --bootstrap 2")
    if not Path(args.json).resolve().parent.is_dir():
        raise InputError(f"{args.json}: its directory does not exist")
    root = Path(args.work)
    if not root.is_dir():
        raise InputError(f"{root}: no such work directory")
    seeds = set(range(args.seed, args.seed + args.fields))
    base, other = parse_measurement(args.base), parse_measurement(args.other)
    rng = np.random.default_rng(args.rng_seed)
    result = paired_difference(root, base, other, seeds, args.bootstrap, rng)
    return {
        "provenance": provenance(),
        "work": str(root),
        "seeds": [args.seed, args.seed + args.fields - 1],
        "unit": UNIT,
        "draws": args.bootstrap,
        "rng_seed": args.rng_seed,
        **result,
    }


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        document = _run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from blendflag.commands.common import write_json

    write_json(document, args.json)
    diff = document["other_minus_base"]
    print(
        f"{document['other']['tiles']}:{document['other']['selection']} - "
        f"{document['base']['tiles']}:{document['base']['selection']}: "
        f"{diff['dm']:+.4f} +/- {diff['dm_err']:.4f} (unpaired {diff['unpaired_err']:.4f}); "
        f"m {document['base']['m']:+.4f} +/- {document['base']['m_err']:.4f} and "
        f"{document['other']['m']:+.4f} +/- {document['other']['m_err']:.4f}"
    )
    for label in ("base", "other"):
        spread = document[label]["per_field"]
        print(
            f"{label}: one field's m scatters by {spread['m_sd']:.3f} "
            f"(shape {spread['m_sd_shape']:.3f}, response {spread['m_sd_response']:.3f}; "
            f"R11 {spread['R11_mean']:.3f} +/- {spread['R11_sd']:.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
