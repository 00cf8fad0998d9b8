"""SExtractor catalogues (FITS and FITS_LDAC): read, annotate, write atomically.

Annotated copies keep every HDU, every column (vector columns such as VIGNET
included, with their TDIM), and every header card of the input; new columns are
appended to the objects table and provenance cards to its header.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from blendflag.errors import CatalogueError, plain_reason
from blendflag.io.annotation import Annotation
from blendflag.io.atomic import atomic_output

LDAC_OBJECTS = "LDAC_OBJECTS"
LDAC_IMHEAD = "LDAC_IMHEAD"


@dataclass
class Catalogue:
    """A SExtractor catalogue held in memory.

    Attributes
    ----------
    path : pathlib.Path or None
        Where it was read from.
    hdul : astropy.io.fits.HDUList
        Every HDU of the file, loaded into memory.
    objects_hdu : int
        Index of the objects table in ``hdul``.
    format : str
        ``"FITS_LDAC"`` or ``"FITS"``.
    """

    path: Path | None
    hdul: fits.HDUList
    objects_hdu: int
    format: str

    @property
    def table(self) -> Table:
        """The objects as an astropy Table (a copy; edit with :func:`write_annotated`)."""
        return Table(self.hdul[self.objects_hdu].data)

    @property
    def colnames(self) -> list[str]:
        return list(self.hdul[self.objects_hdu].columns.names)

    def __len__(self) -> int:
        data = self.hdul[self.objects_hdu].data
        return 0 if data is None else len(data)

    def column(self, name: str) -> np.ndarray:
        """One column as an array; missing columns raise :class:`CatalogueError`."""
        if name not in self.colnames:
            where = self.path.name if self.path else "catalogue"
            shown = ", ".join(self.colnames[:12]) + (" ..." if len(self.colnames) > 12 else "")
            raise CatalogueError(f"{where} has no column {name} (columns: {shown})")
        return np.asarray(self.hdul[self.objects_hdu].data[name])

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """X_IMAGE, Y_IMAGE (1-based pixels, SExtractor convention), as float64.

        Raises
        ------
        CatalogueError
            A column that is missing, not numeric (text, booleans, vectors) or
            holds NaN/inf.
        """
        return self.numeric_column("X_IMAGE"), self.numeric_column("Y_IMAGE")

    def numeric_column(self, name: str) -> np.ndarray:
        """One column as finite float64 values; anything else raises :class:`CatalogueError`."""
        where = self.path.name if self.path else "catalogue"
        col = self.column(name)
        if col.dtype.kind not in "iuf" or col.ndim != 1:
            raise CatalogueError(
                f"{where}: column {name} holds {col.dtype} values, not one number per row"
            )
        values = col.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise CatalogueError(
                f"{where}: column {name} has {bad.size} NaN/inf values (first in row {bad[0] + 1})"
            )
        return values


def read_catalogue(path, require_rows: bool = True) -> Catalogue:
    """Read a SExtractor FITS or FITS_LDAC catalogue.

    FITS_LDAC files hold the objects in the ``LDAC_OBJECTS`` HDU (and the image
    header in ``LDAC_IMHEAD``); plain FITS catalogues hold them in HDU 1.

    Parameters
    ----------
    path : str or path-like
    require_rows : bool
        Raise if the catalogue has no objects. [default: True]

    Raises
    ------
    CatalogueError
        Missing, unreadable, truncated or non-FITS file; no binary table where
        the objects should be; no objects.
    """
    path = Path(path)
    hdul = open_fits(path, "catalogue")
    names = [h.name for h in hdul]
    if LDAC_OBJECTS in names:
        index, fmt = names.index(LDAC_OBJECTS), "FITS_LDAC"
    elif len(hdul) > 1:
        index, fmt = 1, "FITS"
    else:
        raise CatalogueError(f"{path.name} has no table HDU: not a SExtractor catalogue")
    if not isinstance(hdul[index], fits.BinTableHDU):
        raise CatalogueError(
            f"{path.name}: HDU {index} ({hdul[index].name or 'unnamed'}) is not a binary table"
        )
    cat = Catalogue(path=path, hdul=hdul, objects_hdu=index, format=fmt)
    if require_rows and len(cat) == 0:
        raise CatalogueError(f"{path.name} holds no objects (empty catalogue)")
    return cat


def open_fits(path: Path, what: str) -> fits.HDUList:
    """Open a FITS file fully into memory, turning every failure into one line."""
    if not path.exists():
        raise CatalogueError(f"{what} not found: {path}")
    if path.is_dir():
        raise CatalogueError(f"{what} {path} is a directory, not a FITS file")
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            # Own the file handle so it is closed even when astropy fails half-way.
            with open(path, "rb") as fh, fits.open(fh, memmap=False) as hdul:
                hdul.verify("exception")
                # Touch every data unit so truncation is found now, then detach.
                copied = fits.HDUList([_copy_hdu(h) for h in hdul])
    except CatalogueError:
        raise
    except (OSError, ValueError, TypeError, IndexError, fits.VerifyError, Warning) as exc:
        truncated = [w for w in caught if "truncated" in str(w.message)]
        msg = plain_reason(truncated[0].message if truncated else exc)
        raise CatalogueError(f"{what} {path.name} is not a readable FITS file: {msg}") from None
    return copied


def _copy_hdu(hdu):
    data = hdu.data  # raises on truncated files
    if isinstance(hdu, fits.BinTableHDU):
        return fits.BinTableHDU(
            data=data.copy() if data is not None else None, header=hdu.header.copy(), name=hdu.name
        )
    if isinstance(hdu, fits.TableHDU):
        return fits.TableHDU(
            data=data.copy() if data is not None else None, header=hdu.header.copy(), name=hdu.name
        )
    if isinstance(hdu, fits.PrimaryHDU):
        return fits.PrimaryHDU(
            data=None if data is None else np.array(data), header=hdu.header.copy()
        )
    if isinstance(hdu, fits.ImageHDU):
        return fits.ImageHDU(
            data=None if data is None else np.array(data), header=hdu.header.copy(), name=hdu.name
        )
    if isinstance(hdu, fits.CompImageHDU):
        return fits.ImageHDU(data=np.array(data), header=hdu.header.copy(), name=hdu.name)
    return hdu.copy()


def _fits_format(arr: np.ndarray) -> str:
    arr = np.asarray(arr)
    kind, size = arr.dtype.kind, arr.dtype.itemsize
    shape = arr.shape[1:]
    repeat = int(np.prod(shape)) if shape else 1
    base = {
        ("b", 1): "L",
        ("i", 1): "I",
        ("u", 1): "B",
        ("i", 2): "I",
        ("i", 4): "J",
        ("i", 8): "K",
        ("u", 2): "J",
        ("u", 4): "K",
        ("f", 4): "E",
        ("f", 8): "D",
    }.get((kind, size))
    if kind == "U" or kind == "S":
        return f"{arr.dtype.itemsize // (4 if kind == 'U' else 1)}A"
    if base is None:
        raise CatalogueError(f"cannot store dtype {arr.dtype} in a FITS table")
    return f"{repeat}{base}" if repeat != 1 else base


def make_column(name: str, values, unit: str | None = None) -> fits.Column:
    """A FITS column for ``values`` (bool -> L, float32 -> E, ...; vectors keep TDIM)."""
    arr = np.asarray(values)
    if arr.dtype == np.uint16:
        arr = arr.astype(np.int32)
    fmt = _fits_format(arr)
    dim = None
    if arr.ndim > 2:
        dim = "(" + ",".join(str(s) for s in arr.shape[:0:-1]) + ")"
    return fits.Column(name=name, format=fmt, array=arr, unit=unit, dim=dim)


def annotate_hdul(cat: Catalogue, annotation: Annotation) -> fits.HDUList:
    """A new HDUList: ``cat`` with ``annotation``'s columns and cards added.

    Existing columns of the same name are replaced (re-flagging a flagged
    catalogue); every other column, HDU and card is kept as it was.
    """
    n = len(cat)
    old = cat.hdul[cat.objects_hdu]
    for name, values in annotation.columns.items():
        if len(values) != n:
            raise CatalogueError(f"column {name} has {len(values)} values for {n} objects")
    replaced = {c.upper() for c in annotation.columns}
    kept = [c for c in old.columns if c.name.upper() not in replaced]
    new = [make_column(k, v, annotation.units.get(k)) for k, v in annotation.columns.items()]
    header = old.header.copy()
    # Drop the TTYPE/TFORM/... of replaced columns: from_columns rewrites structure cards.
    hdu = fits.BinTableHDU.from_columns(
        fits.ColDefs(kept) + fits.ColDefs(new) if kept else fits.ColDefs(new),
        header=_non_structural(header),
        nrows=n,
        name=old.name,
    )
    for key, value, comment in annotation.cards:
        hdu.header[key] = (value, comment)
    hdus = [h for h in cat.hdul]
    hdus[cat.objects_hdu] = hdu
    return fits.HDUList(hdus)


_STRUCTURAL = (
    "TTYPE",
    "TFORM",
    "TUNIT",
    "TDIM",
    "TNULL",
    "TSCAL",
    "TZERO",
    "TDISP",
    "TBCOL",
    "TCTYP",
    "TCUNI",
    "TCRPX",
    "TCRVL",
    "TCDLT",
)


def _non_structural(header: fits.Header) -> fits.Header:
    out = header.copy()
    for key in list(out.keys()):
        if key.rstrip("0123456789") in _STRUCTURAL and key[len(key.rstrip("0123456789")) :]:
            del out[key]
    for key in (
        "XTENSION",
        "BITPIX",
        "NAXIS",
        "NAXIS1",
        "NAXIS2",
        "PCOUNT",
        "GCOUNT",
        "TFIELDS",
        "EXTNAME",
    ):
        out.remove(key, ignore_missing=True, remove_all=True)
    return out


def write_hdul_atomic(hdul: fits.HDUList, out, *, protect=None) -> Path:
    """Write ``hdul`` to ``out`` through a temporary file in the same directory.

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList
    out : path-like
        Destination; replaced only once the new file is complete.
    protect : path-like or None
        An input file that must not be overwritten (raises if ``out`` is it).

    Raises
    ------
    CatalogueError
        ``out`` is the protected input, or its directory is not writable.
    """
    out = Path(out)
    if (
        protect is not None
        and out.exists()
        and Path(protect).exists()
        and out.resolve() == Path(protect).resolve()
    ):
        raise CatalogueError(f"refusing to overwrite the input {out.name}; use --in-place")
    with atomic_output(out) as tmp:
        hdul.writeto(tmp, output_verify="exception", checksum=False)
    return out


def write_annotated(cat: Catalogue, annotation: Annotation, out, *, in_place: bool = False) -> Path:
    """Write ``cat`` plus ``annotation`` to ``out`` atomically.

    Raises
    ------
    CatalogueError
        ``out`` is the input file and ``in_place`` is False.
    """
    hdul = annotate_hdul(cat, annotation)
    return write_hdul_atomic(hdul, out, protect=None if in_place else cat.path)


def ldac_hdul(table: Table, image_header: fits.Header | None = None) -> fits.HDUList:
    """A FITS_LDAC HDUList: empty primary, LDAC_IMHEAD, LDAC_OBJECTS.

    ``LDAC_IMHEAD`` holds the image header as one row of 80-character cards, in
    the column ``Field Header Card`` as SExtractor writes it.
    """
    header = image_header.copy() if image_header is not None else fits.Header()
    for key in ("XTENSION", "EXTNAME"):
        header.remove(key, ignore_missing=True, remove_all=True)
    cards = header.tostring(endcard=True, padding=False)
    ncards = len(cards) // 80
    imhead = fits.BinTableHDU.from_columns(
        [
            fits.Column(
                name="Field Header Card",
                format=f"{80 * ncards}A",
                dim=f"(80, {ncards})",
                array=np.array(
                    [[cards[i : i + 80] for i in range(0, len(cards), 80)]], dtype="S80"
                ),
            )
        ],
        name=LDAC_IMHEAD,
    )
    columns = [
        make_column(
            name,
            np.asarray(table[name]),
            str(table[name].unit) if table[name].unit is not None else None,
        )
        for name in table.colnames
    ]
    objects = fits.BinTableHDU.from_columns(columns, nrows=len(table), name=LDAC_OBJECTS)
    return fits.HDUList([fits.PrimaryHDU(), imhead, objects])


def write_ldac(table: Table, out, image_header: fits.Header | None = None) -> Path:
    """Write a SExtractor-style FITS_LDAC catalogue atomically."""
    return write_hdul_atomic(ldac_hdul(table, image_header), out)


def write_output_catalogue(
    catalogue: Catalogue | None,
    table: Table,
    annotation: Annotation,
    out,
    image_header: fits.Header | None = None,
) -> Path:
    """Write a run's catalogue: the input one annotated, or the detections as FITS_LDAC.

    Parameters
    ----------
    catalogue : Catalogue or None
        The input catalogue; every HDU, column and card of it is kept and the
        annotation added (:func:`write_annotated`). None writes ``table`` (the
        detections) with the annotation's columns as a new FITS_LDAC file.
    table : astropy.table.Table
        The objects of the run, one row per annotation value.
    annotation : Annotation
        Columns and header cards to add.
    out : str or pathlib.Path
        Output path, written atomically; never the input's path.
    image_header : astropy.io.fits.Header or None
        Header of the image, stored in the LDAC_IMHEAD extension.
    """
    if catalogue is not None:
        return write_annotated(catalogue, annotation, out)
    table = table.copy()
    for name, values in annotation.columns.items():
        table[name] = values
    return write_ldac(table, out, image_header=image_header)
