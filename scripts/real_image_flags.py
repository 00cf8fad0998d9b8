"""The blend flags on a real image: detections and blends drawn on the frame.

Usage::

    python scripts/real_image_flags.py [--frame FITS] [--flaggers sextractor,vgg16] \
        [--out docs/real_image_flags.png]

Runs ``blendflag-shear detect`` and ``flag`` on the ESO NTT/EMMI frame of
``tests/data/real`` (its README says where it comes from) after subtracting
sep's background map, draws one panel per flagger (every detection circled,
the flagger's blends in another colour) and prints the counts. It also flags
the frame as distributed (sky not subtracted) and prints those counts, to show
what an image whose sky is left in does to the flaggers. Nothing here is a
truth test: the frame has no truth.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from blendflag._runtime.quiet_imports import install_for_script

install_for_script()  # no TensorFlow start-up lines, as in blendflag-shear

ROOT = Path(__file__).resolve().parents[1]
FRAME = ROOT / "tests" / "data" / "real" / "ntt_emmi_r.fits"
KEEP_CARDS = ("TELESCOP", "INSTRUME", "OBJECT", "DATE-OBS", "EXPTIME", "OBSERVER")


def read_frame(path: Path) -> tuple[np.ndarray, object]:
    """The frame (float32 ADU) and a header of its observation cards.

    The 1993 ``ESO-LOG`` lines of the original header are not FITS keywords
    (astropy warns about them); they are left out.
    """
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as hdul:
            data = hdul[0].data.astype(np.float32)
            header = fits.Header(
                [(k, hdul[0].header[k]) for k in KEEP_CARDS if k in hdul[0].header]
            )
    return data, header


def write_image(data: np.ndarray, header, path: Path) -> Path:
    """Write ``data`` with ``header`` as a FITS image; return the path."""
    from astropy.io import fits

    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
    return path


def detect_and_flag(image: Path, flaggers: str, work: Path) -> object:
    """``detect`` then ``flag`` through the command line; the annotated objects table."""
    from astropy.table import Table

    from blendflag.cli import main

    catalogue, flagged = work / f"{image.stem}_cat.fits", work / f"{image.stem}_flagged.fits"
    for argv in (
        ["detect", str(image), "--out", str(catalogue)],
        ["flag", str(catalogue), "--image", str(image), "--flaggers", flaggers],
    ):
        extra = ["--out", str(flagged), "--quiet"] if argv[0] == "flag" else []
        if main(argv + extra) != 0:
            sys.exit(f"blendflag-shear {argv[0]} failed on {image}")
    return Table.read(flagged, hdu="LDAC_OBJECTS")


def counts(table, names: list[str]) -> dict:
    """Detections, those whose stamp runs off the image, and per flagger its blends.

    ``<name>_edge`` counts a flagger's blends whose stamp runs off the image
    (``STAMP_FLAGS`` bit 1); ``all_flag`` the objects every flagger calls blends.
    """
    from blendflag.io.stamps import STAMP_EDGE

    edge = (np.asarray(table["STAMP_FLAGS"]) & STAMP_EDGE) != 0
    out = {"detections": len(table), "edge": int(edge.sum())}
    every = np.ones(len(table), dtype=bool)
    for name in names:
        blend = np.asarray(table[f"BLEND_{name.upper()}"], dtype=bool)
        out[name], out[f"{name}_edge"] = int(blend.sum()), int((blend & edge).sum())
        every &= blend
    out["all_flag"] = int(every.sum())
    return out


def plot(data: np.ndarray, table, names: list[str], out: Path, title: str) -> None:
    """One panel per flagger: the frame, every detection circled, the blends in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval

    norm = ImageNormalize(data, interval=ZScaleInterval(), stretch=AsinhStretch(0.5))
    x = np.asarray(table["X_IMAGE"], dtype=float) - 1.0  # 1-based -> array index
    y = np.asarray(table["Y_IMAGE"], dtype=float) - 1.0
    fig, axes = plt.subplots(1, len(names), figsize=(6.2 * len(names), 7.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        blend = np.asarray(table[f"BLEND_{name.upper()}"], dtype=bool)
        ax.imshow(data, origin="lower", cmap="gray_r", norm=norm)
        ax.scatter(x[~blend], y[~blend], s=110, facecolors="none", edgecolors="tab:blue",
                   linewidths=1.3, label=f"not flagged ({int((~blend).sum())})")  # fmt: skip
        ax.scatter(x[blend], y[blend], s=190, facecolors="none", edgecolors="tab:red",
                   linewidths=2.0, label=f"BLEND_{name.upper()} ({int(blend.sum())})")  # fmt: skip
        ax.set_title(f"flagger {name}")
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    _palette(out)


def _palette(path: Path, colours: int = 128) -> None:
    """Rewrite a PNG with ``colours`` colours (pixel noise makes a full-colour one 1 MB)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(
            colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
    small.save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame", type=Path, default=FRAME, help="the real image (FITS)")
    parser.add_argument("--flaggers", default="sextractor,vgg16", help="comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "real_image_flags.png")
    args = parser.parse_args(argv)
    import sep

    names = args.flaggers.split(",")
    raw, header = read_frame(args.frame)
    background = sep.Background(raw)
    subtracted = raw - background.back()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        table = detect_and_flag(write_image(subtracted, header, work / "sky_subtracted.fits"),
                                args.flaggers, work)  # fmt: skip
        as_distributed = detect_and_flag(write_image(raw, header, work / "as_distributed.fits"),
                                         args.flaggers, work)  # fmt: skip
    print(f"frame: {args.frame.name} {raw.shape[1]}x{raw.shape[0]}, sky "
          f"{background.globalback:.0f} ADU, rms {background.globalrms:.1f} ADU")  # fmt: skip
    print(f"sky subtracted: {counts(table, names)}")
    print(f"as distributed (sky left in): {counts(as_distributed, names)}")
    title = (
        f"{args.frame.name}: ESO NTT/EMMI R, sky subtracted; {len(table)} detections "
        "(blendflag-shear detect, sep)"
    )
    plot(subtracted, table, names, args.out, title)
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
