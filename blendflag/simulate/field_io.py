"""Writing simulated fields to a directory of FITS files and their config.

:func:`write_field` writes a :class:`~blendflag.simulate.field.Field` into a
directory (``image.fits``, ``weight.fits``, ``psf.fits``, ``truth.fits``,
``config.yaml``), atomically; :func:`check_field_outdir` checks the directory before
any drawing starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from blendflag.config import to_yaml
from blendflag.errors import BlendflagError, CatalogueError
from blendflag.simulate.field import Field

logger = logging.getLogger(__name__)


def _field_cards(field: Field) -> list:
    from blendflag import __version__

    stars = np.asarray(field.truth["STAR"]) if "STAR" in field.truth.colnames else None
    n_gal = len(field.truth) if stars is None else int((~stars).sum())
    extra = [] if stars is None else [("NSTAR", int(stars.sum()), "number of stars")]
    if field.varying_psf is not None:
        extra += field.varying_psf.cards()
    return [
        ("PIXSCALE", field.pixel_scale, "[arcsec/pixel] pixel scale"),
        ("SHEAR1", field.shear[0], "true reduced shear g1"),
        ("SHEAR2", field.shear[1], "true reduced shear g2"),
        ("NOISE", field.noise_sigma, "[adu] Gaussian noise sigma"),
        ("SEED", field.seed, "numpy default_rng seed"),
        ("SHRSIGN", field.sign, "+1, or -1 for the -g twin of a shear pair"),
        ("REFNOISE", field.reference_noise, "[adu] depth of the blend label"),
        ("DATASET", field.dataset, "blendflag dataset preset"),
        ("NGAL", n_gal, "number of galaxies"),
        (
            "ROTPAIRS",
            bool((np.asarray(field.truth["ROTATED"])).any()),
            "right half = 90-degree rotated copy",
        ),
        ("BFVERS", __version__, "blendflag version"),
        *extra,
    ]


def _write_field_files(field: Field, directory: Path, atomic: bool) -> None:
    from astropy.io import fits

    from blendflag.io.atomic import atomic_output

    cards = _field_cards(field)

    def header(extra=()):
        h = fits.Header()
        for key, value, comment in [*cards, *extra]:
            h[key] = (value, comment)
        return h

    outputs = {
        "image.fits": fits.HDUList(
            [fits.PrimaryHDU(field.image, header=header([("BUNIT", "adu", "pixel unit")]))]
        ),
        "weight.fits": fits.HDUList(
            [
                fits.PrimaryHDU(
                    field.weight, header=header([("BUNIT", "1/adu**2", "inverse variance")])
                )
            ]
        ),
        "psf.fits": fits.HDUList(
            [
                fits.PrimaryHDU(
                    field.psf,
                    header=header(
                        [("COMMENT", "PSF image (pixel included), normalised to sum 1", "")]
                    ),
                )
            ]
        ),
    }
    truth_hdu = fits.table_to_hdu(field.truth)
    truth_hdu.name = "TRUTH"
    for key, value, comment in cards:
        truth_hdu.header[key] = (value, comment)
    outputs["truth.fits"] = fits.HDUList([fits.PrimaryHDU(header=header()), truth_hdu])
    config_text = None
    if field.config is not None:
        config_text = to_yaml(field.config)
    for name, hdul in outputs.items():
        if atomic:
            with atomic_output(directory / name) as tmp:
                hdul.writeto(tmp)
        else:
            hdul.writeto(directory / name)
    if config_text is not None:
        if atomic:
            with atomic_output(directory / "config.yaml") as tmp:
                tmp.write_text(config_text)
        else:
            (directory / "config.yaml").write_text(config_text)


def check_field_outdir(outdir) -> Path:
    """Fail early when ``outdir`` cannot be created or written.

    Raises
    ------
    BlendflagError
        The parent does not exist, ``outdir`` is a file, or is not writable.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise BlendflagError(f"output {outdir} exists and is not a directory")
    parent = outdir.parent if str(outdir.parent) else Path(".")
    if not parent.is_dir():
        raise BlendflagError(f"output directory's parent does not exist: {parent}")
    target = outdir if outdir.is_dir() else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise BlendflagError(f"cannot write to {target}: permission denied")
    return outdir


def write_field(field: Field, outdir) -> Path:
    """Write ``image.fits``, ``weight.fits``, ``psf.fits``, ``truth.fits`` and ``config.yaml``.

    A new directory is filled under a temporary name beside it and renamed
    when complete; into an existing directory each file is written
    atomically. Every file's header carries PIXSCALE (arcsec/pixel), SHEAR1,
    SHEAR2, NOISE (ADU), SEED, SHRSIGN (-1 for the -g twin of a ±g pair),
    REFNOISE (ADU, the depth of the blend label), DATASET, NGAL, ROTPAIRS and BFVERS; the truth
    table is HDU ``TRUTH`` of ``truth.fits``. A field with stars adds NSTAR, one
    with a varying PSF the ``PSF*`` cards of
    :meth:`~blendflag.simulate.psf_variation.VaryingPSF.cards` (``psf.fits`` is
    then the PSF at the image centre).

    Returns
    -------
    pathlib.Path
        ``outdir``.
    """
    import shutil
    import tempfile

    outdir = check_field_outdir(outdir)
    if outdir.is_dir():
        _write_field_files(field, outdir, atomic=True)
        return outdir
    parent = outdir.parent if str(outdir.parent) else Path(".")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise BlendflagError(f"cannot write to {parent}: {exc.strerror}") from None
    try:
        _write_field_files(field, tmp, atomic=False)
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return outdir


@contextlib.contextmanager
def field_staging(outdir, overwrite: bool = False):
    """Yield an empty directory beside ``outdir`` that becomes ``outdir`` on success.

    A directory ``outdir`` that holds files is refused unless ``overwrite``;
    then it is replaced as a whole once the new one is complete, so no file of
    the old run is left beside the new ones. On failure nothing changes.

    Raises
    ------
    BlendflagError
        ``outdir`` is not empty and ``overwrite`` is False; it cannot be written.
    """
    import shutil
    import tempfile

    outdir = check_field_outdir(outdir)
    if outdir.is_dir() and any(outdir.iterdir()) and not overwrite:
        raise BlendflagError(
            f"output directory {outdir} is not empty; pass --overwrite to replace it"
        )
    parent = outdir.parent if str(outdir.parent) else Path(".")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise BlendflagError(f"cannot write to {parent}: {exc.strerror}") from None
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())
        old = None
        if outdir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".old", dir=parent))
            os.rename(outdir, old / "replaced")
        os.rename(staging, outdir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_field_info(image, truth=None, name: str = "image") -> dict:
    """What a simulated field's files say about it: the reader of :func:`write_field`'s cards.

    Parameters
    ----------
    image : path-like
        The field's image (its header: ``SHEAR1``, ``SHRSIGN``, ``NOISE``...).
    truth : path-like or None
        Its truth table (``truth.fits``), if any.
    name : str
        The field's key when the headers do not give one (real data).

    Returns
    -------
    dict
        ``truth`` (Table with its header's depths in ``meta``, or None),
        ``shear`` (the applied g1, g2, or None), ``sign`` (``SHRSIGN``: -1 for
        the -g twin of a ±g pair, else +1), ``noise`` (``NOISE``, ADU),
        ``reference_noise`` (``REFNOISE``: the depth of the flaggers' blend
        label, ADU) and ``field`` (the key pairing the +g and -g tiles: preset,
        seed and number of galaxies; ``name`` for real data).

    Raises
    ------
    CatalogueError
        The truth file is unreadable or not a truth table (see :func:`read_truth`).
    """
    from astropy.io import fits

    info = {
        "truth": None,
        "shear": None,
        "sign": 1,
        "noise": None,
        "reference_noise": None,
        "field": name,
    }
    image_header = fits.getheader(image)
    headers = [image_header]
    if truth:
        info["truth"], truth_header = read_truth(truth)
        headers.append(truth_header)
    for h in headers:
        if "SHEAR1" in h and info["shear"] is None:
            info["shear"] = (float(h["SHEAR1"]), float(h.get("SHEAR2", 0.0)))
        if "SHRSIGN" in h:
            info["sign"] = int(h["SHRSIGN"])
        if info["noise"] is None:
            info["noise"] = header_noise(h)
        if "REFNOISE" in h and info["reference_noise"] is None:
            info["reference_noise"] = float(h["REFNOISE"])
        info["field"] = field_key(h, info["field"])
    return info


def field_key(header, default: str) -> str:
    """The key pairing a simulated field's ±g images: ``DATASET:SEED:NGAL``, else ``default``.

    ``simulate-field`` writes those cards; another tool's image has none.
    """
    if header is not None and "SEED" in header and "DATASET" in header:
        return f"{header['DATASET']}:{header['SEED']}:{header.get('NGAL', '')}"
    return default


def header_noise(header) -> float | None:
    """The ``NOISE`` card of a header: the pixel noise sigma (ADU) ``simulate-field`` writes.

    Returns
    -------
    float or None
        None when the card is absent, or is not a finite number >= 0 (then
        with a warning: another tool's card of that name is left alone).
    """
    if "NOISE" not in header:
        return None
    value = header["NOISE"]
    try:
        sigma = float(value)
    except (TypeError, ValueError):
        sigma = float("nan")
    if isinstance(value, bool) or not (sigma >= 0 and np.isfinite(sigma)):
        logger.warning("header card NOISE = %r is no noise sigma in ADU; ignored", value)
        return None
    return sigma


#: Truth columns a comparison needs: the true positions (1-based pixels) that
#: detections are matched to (:func:`blendflag.truth.match_truth`).
TRUTH_NEEDED = ("X", "Y")
#: Truth columns used when present (ids, rotated pairs, footprints).
TRUTH_OPTIONAL = ("ID", "PAIR_ID", "ROTATED", "OVERLAPS", "OVERLAPS_FIELD")


def read_truth(path):
    """A truth table as :func:`write_field` writes it, checked.

    Parameters
    ----------
    path : path-like
        ``truth.fits``: the table in HDU 1 (``TRUTH``), the field's cards in
        the primary header.

    Returns
    -------
    (astropy.table.Table, astropy.io.fits.Header)
        The table, with its header's depths ``ISONOISE`` and ``FLDNOISE``
        and its ``SHRSCENE`` in ``meta``, and the primary header.

    Raises
    ------
    CatalogueError
        Unreadable, no table in HDU 1, or a needed column missing or not numeric.
    """
    from astropy.io import fits
    from astropy.table import Table

    from blendflag.io.catalog import open_fits

    hdul = open_fits(Path(path), "truth table")
    if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
        raise CatalogueError(f"truth table {path} has no binary table in HDU 1: {_NOT_TRUTH}")
    table = Table(hdul[1].data)
    _check_truth_columns({n: table[n].dtype.kind in "iuf" for n in table.colnames}, path)
    for key in ("ISONOISE", "FLDNOISE"):
        if key in hdul[1].header:
            table.meta[key] = float(hdul[1].header[key])
    if "SHRSCENE" in hdul[1].header:
        table.meta["SHRSCENE"] = bool(hdul[1].header["SHRSCENE"])
    return table, hdul[0].header


def check_truth_file(path) -> None:
    """Check a truth table's columns from its headers alone (cheap: no rows are read).

    Raises
    ------
    CatalogueError
        See :func:`read_truth`.
    """
    from astropy.io import fits

    from blendflag.io.catalog import open_fits

    try:
        header = fits.getheader(path, 1)
    except (OSError, IndexError, ValueError):
        open_fits(Path(path), "truth table")  # one line naming what is wrong
        raise CatalogueError(
            f"truth table {path} has no binary table in HDU 1: {_NOT_TRUTH}"
        ) from None
    if header.get("XTENSION") != "BINTABLE":
        raise CatalogueError(f"truth table {path} has no binary table in HDU 1: {_NOT_TRUTH}")
    columns = {
        str(header[f"TTYPE{i}"]).strip(): header.get(f"TFORM{i}", "").strip()[-1:] in "BIJKED"
        for i in range(1, int(header.get("TFIELDS", 0)) + 1)
        if f"TTYPE{i}" in header
    }
    _check_truth_columns(columns, path)


_NOT_TRUTH = (
    "it is not a truth table written by blendflag simulate-field; leave it out "
    "(compare without --truth, or compare --tiles ... --no-truth)"
)


def _check_truth_columns(columns: dict, path) -> None:
    """Raise unless ``columns`` (``{name: numeric}``) holds :data:`TRUTH_NEEDED`, numeric."""
    missing = [c for c in TRUTH_NEEDED if c not in columns]
    if missing:
        raise CatalogueError(
            f"truth table {path} has no column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (needed: {', '.join(TRUTH_NEEDED)}; used when present: "
            f"{', '.join(TRUTH_OPTIONAL)}): {_NOT_TRUTH}"
        )
    text = [c for c in TRUTH_NEEDED if not columns[c]]
    if text:
        raise CatalogueError(
            f"truth table {path}: column {text[0]} is not numeric (the true positions, "
            f"1-based pixels): {_NOT_TRUTH}"
        )
