"""±g scene pairs for metadetection engines: run one engine, or compare two runs.

Usage::

    # run an image engine (e.g. metadetect, or metadetect_ext where metadetect imports)
    python scripts/metadetect_compare.py run --engine metadetect_ext --pairs 100 \
        --seed 1 --density 40 --out ext.json
    # compare two runs made with the same scene options and seed
    python scripts/metadetect_compare.py diff ext.json builtin.json [--json OUT.json]

Scenes follow metadetect's own shear test (``make_sim`` in
metadetect/shear_meas_test/test_shear_meas.py) at issue 17's settings:
251 x 251 pixels at 0.2"/px; round exponential galaxies of r50 = 0.5" at
uniform random positions inside a 34-pixel border (``--buffer``), their number
``int(density * interior area)``, each moved by up to one pixel; the whole
scene (positions too) sheared by (±g, 0) about the image centre; a Gaussian
PSF of FWHM 0.9" (``--psf moffat``: Moffat beta 2.5, same FWHM); noise sigma
``sqrt(sum(I^2)) / snr`` of one PSF-convolved galaxy (matched-filter S/N,
default 75). The + and - scenes of a pair have the same galaxies and the same
noise, and the engine gets the same rng seed for both.

Each scene goes through blendflag's engine interface,
``get_shear_engines(pm)[name](ShearConfig()).measure_image(...)``. Per pair and
sign the output holds ``g1``, ``g2`` (mean noshear ellipticity of the
unflagged rows), ``R11``, ``R22`` (from the separately selected 1p/1m and 2p/2m
catalogues), the number of noshear detections and of selected ones, and the
seconds. ``m = <g1+ - g1->/2 / <R11+ + R11->/2 / g - 1``; errors bootstrap the
pairs (500 draws), as metadetect's test does.

``diff`` pairs the two runs by pair index and reports the mean per-pair
difference of the shear estimate ``(g1+ - g1-) / (R11+ + R11-)`` with its
paired bootstrap error, the difference in m with the same draws, and the
ratio of the mean responses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from blendflag._runtime.provenance import provenance
from blendflag._runtime.quiet_imports import install_for_script

install_for_script()  # no TensorFlow start-up lines, as in blendflag-shear

SIZE = 251  # pixels
SCALE = 0.2  # arcsec / pixel
PSF_SIZE = 53  # pixels
R50 = 0.5  # arcsec
PSF_FWHM = 0.9  # arcsec
STEP = 0.01
NBOOT = 500


def draw_scene(g1, seed, density, snr, psf_kind, buffer, grid=0):
    """One scene: (image, psf image, noise sigma, number of galaxies).

    ``grid`` > 0 puts the galaxies on a ``grid`` x ``grid`` lattice inside the
    border instead (isolated galaxies; ``density`` is then unused).
    """
    import galsim

    rng = np.random.default_rng(seed)
    half = (SIZE - 2 * buffer) * SCALE / 2
    if grid:
        ticks = np.linspace(-half, half, grid)
        xy = np.array([(x, y) for y in ticks for x in ticks])
        xy = xy + rng.uniform(-SCALE / 2, SCALE / 2, size=xy.shape)
        n = len(xy)
    else:
        n = int(density * ((SIZE - 2 * buffer) * SCALE / 60) ** 2)
        xy = rng.uniform(-half, half, size=(n, 2)) + rng.uniform(-SCALE, SCALE, size=(n, 2))
    if psf_kind == "moffat":
        psf = galsim.Moffat(beta=2.5, fwhm=PSF_FWHM)
    else:
        psf = galsim.Gaussian(fwhm=PSF_FWHM)
    gal = galsim.Exponential(half_light_radius=R50)
    one = galsim.Convolve(gal, psf).drawImage(scale=SCALE).array
    sigma = float(np.sqrt(np.sum(one**2)) / snr)
    if n:
        scene = galsim.Add([gal.shift(x, y) for x, y in xy]).shear(g1=g1, g2=0.0)
        image = galsim.Convolve(scene, psf).drawImage(nx=SIZE, ny=SIZE, scale=SCALE).array
    else:
        image = np.zeros((SIZE, SIZE))
    image = image + rng.normal(0.0, sigma, size=image.shape)
    psf_image = psf.drawImage(nx=PSF_SIZE, ny=PSF_SIZE, scale=SCALE).array
    return image, psf_image, sigma, n


def summarise(cats):
    """g1, g2, R11, R22 and counts of one scene's VersionCatalogues."""
    good = cats.good_masks()
    mean = {}
    for v, t in cats.tables.items():
        sel = good[v]
        mean[v] = (
            (float(np.mean(t["G1"][sel])), float(np.mean(t["G2"][sel])))
            if sel.any()
            else (np.nan, np.nan)
        )
    step = float(cats.step)
    return {
        "g1": mean["noshear"][0],
        "g2": mean["noshear"][1],
        "R11": (mean["1p"][0] - mean["1m"][0]) / (2 * step),
        "R22": (mean["2p"][1] - mean["2m"][1]) / (2 * step),
        "n_det": len(cats.tables["noshear"]),
        "n_sel": int(good["noshear"].sum()),
        "failed": cats.meta.get("failed"),
    }


def run(args):
    from blendflag.config import ShearConfig
    from blendflag.plugins import get_plugin_manager, get_shear_engines, select_engine

    engines = get_shear_engines(get_plugin_manager())
    options = json.loads(args.options) if args.options else {}
    engine = select_engine(engines, args.engine)(ShearConfig(options={args.engine: options}))
    seeds = np.random.SeedSequence(args.seed).generate_state(2 * args.pairs).reshape(-1, 2)
    # one untimed call first: numba compiles ngmix's code, GalSim builds its tables
    image, psf, sigma, _ = draw_scene(args.g, 0, args.density, args.snr, args.psf, args.buffer)
    engine.measure_image(image, None, psf, SCALE, sigma, np.random.default_rng(0))
    pairs = []
    for i, (scene_seed, engine_seed) in enumerate(seeds):
        row = {"index": i, "scene_seed": int(scene_seed), "engine_seed": int(engine_seed)}
        for sign, g in (("p", args.g), ("m", -args.g)):
            image, psf, sigma, n = draw_scene(
                g, int(scene_seed), args.density, args.snr, args.psf, args.buffer, args.grid
            )
            start = time.perf_counter()
            cats = engine.measure_image(
                image, None, psf, SCALE, sigma, np.random.default_rng(int(engine_seed))
            )
            seconds = time.perf_counter() - start
            row[sign] = {**summarise(cats), "seconds": seconds, "n_true": n}
        pairs.append(row)
        if not args.quiet:
            print(
                f"pair {i}: n={row['p']['n_det']}/{row['m']['n_det']} "
                f"{row['p']['seconds']:.2f}+{row['m']['seconds']:.2f} s",
                file=sys.stderr,
            )
    usable = [p for p in pairs if _usable(p)]
    report = {
        "engine": engine.name,
        "options": {k: getattr(args, k) for k in ("pairs", "seed", "g", "density", "snr", "psf")}
        | {
            "buffer": args.buffer,
            "grid": args.grid,
            "engine_options": options,
            "size": SIZE,
            "scale": SCALE,
            "r50": R50,
            "psf_fwhm": PSF_FWHM,
        },
        "pairs": pairs,
        "summary": {**m_and_c(usable, args.g), **timing(pairs), "n_pairs_used": len(usable)},
        "provenance": provenance(),
    }
    write_json(report, args.out)
    print(json.dumps(report["summary"], indent=1))


def _usable(pair):
    return all(
        pair[s]["failed"] is None and np.isfinite([pair[s][k] for k in ("g1", "R11")]).all()
        for s in ("p", "m")
    )


def _arrays(pairs):
    get = lambda s, k: np.array([p[s][k] for p in pairs], dtype=float)  # noqa: E731
    return {f"{k}{s}": get(s, k) for s in ("p", "m") for k in ("g1", "g2", "R11", "R22")}


def _m_c(a, g, idx):
    m = np.mean(a["g1p"][idx] - a["g1m"][idx]) / np.mean(a["R11p"][idx] + a["R11m"][idx]) / g - 1
    c = np.mean(a["g2p"][idx] + a["g2m"][idx]) / np.mean(a["R22p"][idx] + a["R22m"][idx])
    return m, c


def m_and_c(pairs, g):
    """m, c and their pair-bootstrap errors (metadetect's estimator)."""
    if not pairs:
        return {"m": None, "m_err": None, "c": None, "c_err": None}
    a = _arrays(pairs)
    n = len(pairs)
    m, c = _m_c(a, g, np.arange(n))
    draws = np.random.default_rng(14324).integers(0, n, size=(NBOOT, n))
    boot = np.array([_m_c(a, g, idx) for idx in draws])
    return {
        "m": float(m),
        "m_err": float(np.std(boot[:, 0])),
        "c": float(c),
        "c_err": float(np.std(boot[:, 1])),
        "R11_mean": float(np.mean((a["R11p"] + a["R11m"]) / 2)),
    }


def timing(pairs):
    """Seconds per image, and a + b * n_det fitted over the images."""
    t = np.array([p[s]["seconds"] for p in pairs for s in ("p", "m")])
    n = np.array([p[s]["n_det"] for p in pairs for s in ("p", "m")], dtype=float)
    out = {"seconds_per_image": float(np.mean(t)), "detections_per_image": float(np.mean(n))}
    if len(t) > 2 and np.ptp(n) > 0:
        b, a = np.polyfit(n, t, 1)
        out |= {"seconds_fixed_per_image": float(a), "seconds_per_detection": float(b)}
    return out


def _scene_options(options: dict) -> dict:
    """The options that define the scenes (not the engine's settings; no grid = 0)."""
    scene = {k: v for k, v in options.items() if k != "engine_options"}
    scene.setdefault("grid", 0)
    return scene


def diff(args):
    runs = [json.load(open(path)) for path in (args.a, args.b)]
    scenes = [_scene_options(run["options"]) for run in runs]
    if scenes[0] != scenes[1]:
        raise ValueError("the two runs were made with different scene options")
    keep = [
        i
        for i, (p, q) in enumerate(zip(*(r["pairs"] for r in runs), strict=False))
        if _usable(p) and _usable(q)
    ]
    arr = [_arrays([r["pairs"][i] for i in keep]) for r in runs]
    g = runs[0]["options"]["g"]
    n = len(keep)
    if n == 0:
        raise ValueError("no pair usable in both runs")
    est = [(a["g1p"] - a["g1m"]) / (a["R11p"] + a["R11m"]) for a in arr]
    resp = [(a["R11p"] + a["R11m"]) / 2 for a in arr]
    d = est[0] - est[1]
    draws = np.random.default_rng(14324).integers(0, n, size=(NBOOT, n))
    dm = lambda idx: _m_c(arr[0], g, idx)[0] - _m_c(arr[1], g, idx)[0]  # noqa: E731
    ratio = lambda idx: np.mean(resp[0][idx]) / np.mean(resp[1][idx])  # noqa: E731
    out = {
        "engines": [r["engine"] for r in runs],
        "n_pairs": n,
        "mean_shear_difference": float(np.mean(d)),
        "mean_shear_difference_err": float(np.std([np.mean(d[i]) for i in draws])),
        "per_pair_difference_rms": float(np.std(d)),
        "dm": float(dm(np.arange(n))),
        "dm_err": float(np.std([dm(i) for i in draws])),
        "R_ratio": float(ratio(np.arange(n))),
        "R_ratio_err": float(np.std([ratio(i) for i in draws])),
        "m": [m_and_c([r["pairs"][i] for i in keep], g)["m"] for r in runs],
    }
    if args.json:
        write_json({**out, "provenance": provenance()}, args.json)
    print(json.dumps(out, indent=1))


def write_json(data, path):
    from blendflag.io.atomic import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=float))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="run one engine on ±g scene pairs")
    r.add_argument("--engine", required=True, help="registered image engine name")
    r.add_argument("--pairs", type=int, default=100)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--g", type=float, default=0.02, help="true shear g1 of the + scene")
    r.add_argument("--density", type=float, default=40.0, help="galaxies per arcmin^2")
    r.add_argument("--snr", type=float, default=75.0, help="matched-filter S/N of one galaxy")
    r.add_argument("--psf", choices=("gauss", "moffat"), default="gauss")
    r.add_argument("--buffer", type=int, default=34, help="border without galaxies, pixels")
    r.add_argument(
        "--grid", type=int, default=0, help="N: isolated galaxies on an N x N grid (0: random)"
    )
    r.add_argument("--out", required=True, help="JSON of per-pair results")
    r.add_argument("--quiet", action="store_true")
    r.add_argument(
        "--options",
        help='engine settings as JSON, e.g. {"cell_size": 256, "detect": {"thresh": 0.8}}',
    )
    d = sub.add_parser("diff", help="compare two runs pair by pair")
    d.add_argument("a")
    d.add_argument("b")
    d.add_argument("--json", help="write the comparison here")
    args = parser.parse_args(argv)
    try:
        run(args) if args.mode == "run" else diff(args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a PluginError, BlendflagError: one line, no traceback
        if type(exc).__module__.startswith("blendflag"):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
