"""FITS / FITS_LDAC catalogues: read, annotate without loss, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from blendflag.errors import CatalogueError
from blendflag.io.annotation import Annotation
from blendflag.io.atomic import atomic_output
from blendflag.io.catalog import (
    annotate_hdul,
    read_catalogue,
    write_annotated,
    write_ldac,
)


def sextractor_fits(path, ldac: bool, n=20, rng=None):
    """A catalogue shaped like SExtractor's, with a VIGNET vector column."""
    rng = rng or np.random.default_rng(3)
    cols = [
        fits.Column(name="NUMBER", format="J", array=np.arange(1, n + 1)),
        fits.Column(name="X_IMAGE", format="E", unit="pixel", array=rng.uniform(20, 230, n)),
        fits.Column(name="Y_IMAGE", format="E", unit="pixel", array=rng.uniform(20, 230, n)),
        fits.Column(name="FLUX_AUTO", format="E", unit="count", array=rng.uniform(1, 1e4, n)),
        fits.Column(name="FLAGS", format="I", array=rng.integers(0, 4, n)),
        fits.Column(
            name="VIGNET",
            format="441E",
            dim="(21, 21)",
            array=rng.normal(size=(n, 21, 21)).astype(np.float32),
        ),
        fits.Column(name="MAG_APER", format="3E", array=rng.normal(20, 1, (n, 3))),
        fits.Column(name="CLASS", format="8A", array=np.array(["gal"] * n)),
    ]
    objects = fits.BinTableHDU.from_columns(cols, name="LDAC_OBJECTS" if ldac else None)
    objects.header["SEXVERS"] = ("2.25.0", "SExtractor version")
    objects.header["COMMENT"] = "a comment card"
    objects.header["HISTORY"] = "a history card"
    primary = fits.PrimaryHDU()
    primary.header["ORIGIN"] = "test"
    hdus = [primary]
    if ldac:
        cards = fits.Header({"NAXIS1": 256, "GAIN": 1.5}).tostring(padding=False)
        ncards = len(cards) // 80
        hdus.append(
            fits.BinTableHDU.from_columns(
                [
                    fits.Column(
                        name="Field Header Card",
                        format=f"{80 * ncards}A",
                        dim=f"(80, {ncards})",
                        array=np.array([[cards[i : i + 80] for i in range(0, len(cards), 80)]]),
                    )
                ],
                name="LDAC_IMHEAD",
            )
        )
    hdus.append(objects)
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.mark.parametrize("ldac", [True, False])
def test_annotate_keeps_everything(tmp_path, ldac):
    src = sextractor_fits(tmp_path / "in.fits", ldac)
    cat = read_catalogue(src)
    assert cat.format == ("FITS_LDAC" if ldac else "FITS")
    n = len(cat)
    ann = Annotation(
        columns={
            "BLEND_TEST": np.arange(n) % 2 == 0,
            "P_BLEND_TEST": np.linspace(0, 1, n, dtype=np.float32),
        },
        cards=[("BF_TEST", 1.5, "a provenance card")],
    )
    out = write_annotated(cat, ann, tmp_path / "out.fits")
    with fits.open(src) as a, fits.open(out) as b:
        assert [h.name for h in a] == [h.name for h in b]
        oi = cat.objects_hdu
        for i, (ha, hb) in enumerate(zip(a, b, strict=True)):
            for card in ha.header.cards:
                if card.keyword in ("NAXIS1", "TFIELDS", "CHECKSUM", "DATASUM"):
                    continue
                assert card.keyword in hb.header, card.keyword
            if i != oi and ha.data is not None:
                assert ha.data.tobytes() == hb.data.tobytes()
        ta, tb = a[oi], b[oi]
        for name in ta.columns.names:
            ca, cb = ta.columns[name], tb.columns[name]
            assert ca.format == cb.format and ca.unit == cb.unit and ca.dim == cb.dim, name
            assert np.asarray(ta.data[name]).tobytes() == np.asarray(tb.data[name]).tobytes(), name
        assert tb.data["VIGNET"].shape == (n, 21, 21)
        np.testing.assert_array_equal(tb.data["BLEND_TEST"], np.arange(n) % 2 == 0)
        assert tb.columns["P_BLEND_TEST"].format == "E"
        assert tb.header["BF_TEST"] == 1.5
        assert tb.header["SEXVERS"] == "2.25.0"
        assert "a history card" in str(tb.header["HISTORY"])
        if ldac:
            assert b["LDAC_IMHEAD"].data.tobytes() == a["LDAC_IMHEAD"].data.tobytes()


def test_reannotation_replaces_column(tmp_path):
    src = sextractor_fits(tmp_path / "in.fits", True)
    cat = read_catalogue(src)
    first = write_annotated(
        cat, Annotation(columns={"BLEND_X": np.zeros(len(cat), bool)}), tmp_path / "a.fits"
    )
    again = read_catalogue(first)
    hdul = annotate_hdul(again, Annotation(columns={"BLEND_X": np.ones(len(cat), bool)}))
    names = hdul["LDAC_OBJECTS"].columns.names
    assert names.count("BLEND_X") == 1
    assert hdul["LDAC_OBJECTS"].data["BLEND_X"].all()


def test_input_is_not_overwritten_unless_in_place(tmp_path):
    src = sextractor_fits(tmp_path / "in.fits", True)
    before = src.read_bytes()
    cat = read_catalogue(src)
    ann = Annotation(columns={"BLEND_X": np.ones(len(cat), bool)})
    with pytest.raises(CatalogueError, match="refusing to overwrite the input"):
        write_annotated(cat, ann, src)
    assert src.read_bytes() == before
    write_annotated(cat, ann, src, in_place=True)
    assert "BLEND_X" in read_catalogue(src).colnames


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "x.fits"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert list(tmp_path.iterdir()) == [out]


def test_write_ldac_layout(tmp_path):
    t = Table(
        {
            "NUMBER": np.arange(1, 4, dtype=np.int32),
            "X_IMAGE": [1.0, 2.0, 3.0],
            "Y_IMAGE": [4.0, 5.0, 6.0],
            "FLAGS": np.array([0, 2, 3], dtype=np.int16),
        }
    )
    header = fits.Header({"GAIN": 2.0, "EXPTIME": 300.0})
    out = write_ldac(t, tmp_path / "c.fits", image_header=header)
    cat = read_catalogue(out)
    assert cat.format == "FITS_LDAC"
    with fits.open(out) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "LDAC_IMHEAD", "LDAC_OBJECTS"]
        text = "".join(
            c.decode() if isinstance(c, bytes) else c
            for c in hdul["LDAC_IMHEAD"].data["Field Header Card"][0]
        )
        assert "GAIN" in text and "EXPTIME" in text
    np.testing.assert_array_equal(cat.column("FLAGS"), [0, 2, 3])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "not found"),
        (b"this is not a FITS file at all", "not a readable FITS file"),
        ("truncated", "not a readable FITS file"),
        ("image_only", "no table HDU"),
        ("image_in_hdu1", "is not a binary table"),
        ("empty", "no objects"),
    ],
)
def test_bad_catalogues(tmp_path, content, match):
    path = tmp_path / "bad.fits"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        sextractor_fits(path, True)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 4000])
    elif content == "image_only":
        fits.PrimaryHDU(np.zeros((4, 4))).writeto(path)
    elif content == "image_in_hdu1":
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4)))]).writeto(path)
    elif content == "empty":
        fits.HDUList(
            [
                fits.PrimaryHDU(),
                fits.BinTableHDU.from_columns(
                    [fits.Column(name="X_IMAGE", format="E", array=np.zeros(0))],
                    name="LDAC_OBJECTS",
                ),
            ]
        ).writeto(path)
    with pytest.raises(CatalogueError, match=match):
        read_catalogue(path)


def test_missing_column_message(tmp_path):
    cat = read_catalogue(sextractor_fits(tmp_path / "in.fits", False))
    with pytest.raises(CatalogueError, match="has no column ELLIPTICITY"):
        cat.column("ELLIPTICITY")
