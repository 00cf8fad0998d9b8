"""Real pixels through ``detect``, ``flag`` and the annotation: real noise, PSF and galaxies.

The frame is a 256x256 ESO NTT/EMMI R-band image (tests/data/real/README.md
says where it comes from and its licence). Nothing here is a truth test: the
floors come from looking at the image (about 35 sources stand out at a
glance), and the checks are that the chain runs on an observed frame and
gives a sane, complete catalogue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from tests.conftest import run_cli

FRAME = Path(__file__).parent / "data" / "real" / "ntt_emmi_r.fits"
#: Sources that stand out by eye are about 35; a detection at 1.5 sigma finds more.
MIN_ROWS, MAX_ROWS = 30, 150


def sky_subtracted(path: Path, out: Path) -> Path:
    """The frame minus sep's background map (the pipeline expects a sky-subtracted image).

    The copy keeps the observation's cards, not the 1993 ``ESO-LOG`` lines
    astropy warns about.
    """
    import warnings

    import sep

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ESO-LOG cards: not FITS keywords
        with fits.open(path) as hdul:
            data = hdul[0].data.astype(np.float32)
            keep = ("TELESCOP", "INSTRUME", "OBJECT", "DATE-OBS", "EXPTIME", "OBSERVER")
            header = fits.Header([(k, hdul[0].header[k]) for k in keep])
    fits.PrimaryHDU(data - sep.Background(data).back(), header=header).writeto(out)
    return out


def _objects(path: Path) -> Table:
    return Table.read(path, hdu="LDAC_OBJECTS")


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    """The sky-subtracted frame and ``detect``'s catalogue of it."""
    tmp = tmp_path_factory.mktemp("real")
    image = sky_subtracted(FRAME, tmp / "image.fits")
    catalogue = tmp / "cat.fits"
    from blendflag.cli import main

    assert main(["detect", str(image), "--out", str(catalogue)]) == 0
    return {"image": image, "catalogue": catalogue, "tmp": tmp}


def test_the_frame_is_small_and_as_described():
    import warnings

    assert FRAME.stat().st_size < 1_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ESO-LOG cards
        header = fits.getheader(FRAME)
    assert (header["NAXIS1"], header["NAXIS2"]) == (256, 256)
    assert header["TELESCOP"].startswith("ESONTT") and header["INSTRUME"] == "EMMI"


def test_detect_finds_the_galaxies_at_finite_positions_inside_the_image(frame):
    table = _objects(frame["catalogue"])
    assert MIN_ROWS < len(table) < MAX_ROWS
    for column, side in (("X_IMAGE", 256), ("Y_IMAGE", 256)):
        values = np.asarray(table[column], dtype=float)
        assert np.isfinite(values).all()
        assert (values >= 0.5).all() and (values <= side + 0.5).all()
    assert (np.asarray(table["FLUX_AUTO"]) > 0).mean() > 0.9


def _flag(frame, capsys, flaggers: str) -> Table:
    out = frame["tmp"] / f"flagged_{flaggers.replace(',', '_')}.fits"
    argv = ["flag", frame["catalogue"], "--image", frame["image"], "--flaggers", flaggers]
    code, _, err = run_cli([*argv, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    return out


def _check_annotated(frame, out: Path, names: list[str]) -> None:
    before, after = _objects(frame["catalogue"]), _objects(out)
    assert len(after) == len(before)
    for column in before.colnames:  # every input column kept, unchanged
        assert np.array_equal(np.asarray(after[column]), np.asarray(before[column]))
    with fits.open(out) as hdul:
        assert "LDAC_IMHEAD" in [h.name for h in hdul]
        assert "BF_VERS" in hdul["LDAC_OBJECTS"].header
    for name in names:
        flags = np.asarray(after[f"BLEND_{name.upper()}"], dtype=bool)
        assert 0 < flags.sum() < len(flags) / 2, (name, int(flags.sum()))


def test_flag_sextractor_marks_some_blends_and_keeps_every_column(frame, capsys):
    out = _flag(frame, capsys, "sextractor")
    _check_annotated(frame, out, ["sextractor"])


def test_flag_vgg16_on_real_pixels(frame, capsys):
    from blendflag.config import PipelineConfig
    from blendflag.errors import BlendflagError
    from blendflag.flagging.flaggers import make_flaggers
    from blendflag.plugins import get_plugin_manager

    pytest.importorskip("keras")
    try:
        make_flaggers(get_plugin_manager(), ["vgg16"], PipelineConfig())
    except BlendflagError as exc:
        pytest.skip(f"vgg16 unavailable: {exc}")
    out = _flag(frame, capsys, "sextractor,vgg16")
    _check_annotated(frame, out, ["sextractor", "vgg16"])
    probability = np.asarray(_objects(out)["P_BLEND_VGG16"], dtype=float)
    assert np.isfinite(probability).all() and ((probability >= 0) & (probability <= 1)).all()
