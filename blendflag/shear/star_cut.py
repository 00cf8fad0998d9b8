"""Stars out of the shear sample: which detections are stars, and every selection without them.

A star is no lensed galaxy: measured, it dilutes the response (on a
CFIS-sized tile with 3,000 stars, R by about 5 %). :func:`image_stars` finds
them

- by the truth of a simulated field (its rows with ``STAR`` true,
  :func:`blendflag.truth.true_stars`, through the detections' truth match);
- else by the stellar locus of the catalogue
  (:func:`blendflag.psf.stars.catalogue_stars`), which needs ``X_IMAGE``,
  ``Y_IMAGE``, ``FLUX_RADIUS``, ``SNR_WIN`` and ``FLAGS``; without them no star
  can be identified, and the note says so;
- or takes those of a split image's whole catalogue (the locus is followed
  across the whole image, not a sub-tile).

:func:`complete_without_stars` leaves them out of every selection (``all``,
``all_masked``, ``no_true_blends``, ``no_<flagger>_blends``) unless
``shear.keep_stars``; kept stars have no rotated partner, so each is a unit of
its own and the pair rule applies to the galaxies only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blendflag.shear.results import METACAL_VERSIONS

TRUTH, LOCUS = "truth", "stellar locus"


@dataclass
class ImageStars:
    """The stars among one image's detections.

    Attributes
    ----------
    rows : numpy.ndarray or None
        bool per row of the pipeline's table, True for a star; None when no
        star could be identified.
    identified_by : str or None
        ``"truth"``, ``"stellar locus"``, or None.
    note : str or None
        Why no star could be identified.
    x, y : numpy.ndarray or None
        The stars' positions, 1-based pixels (to find them in an image
        engine's own catalogues).
    """

    rows: np.ndarray | None
    identified_by: str | None
    note: str | None = None
    x: np.ndarray | None = None
    y: np.ndarray | None = None

    def version_rows(self, result) -> dict | None:
        """``{version: bool per row}`` of ``result``: its rows that are stars (None: unknown).

        A stamp result has the table's rows in every version; an image
        engine's catalogues are matched to the stars' positions (within
        :data:`blendflag.truth.MATCH_RADIUS`), at their positions before the
        version's shear when the engine gives them.
        """
        if self.rows is None:
            return None
        if result.sum_layout == "stamps":
            return dict.fromkeys(METACAL_VERSIONS, self.rows)
        return {v: _near_stars(result.tables[v], self.x, self.y) for v in METACAL_VERSIONS}

    def summary(self, n_rows: int | None, kept: bool) -> dict:
        """``{"n", "identified_by", "kept", "note"}`` of this image.

        ``n_rows`` is the number of star rows (None: unknown), ``kept`` the
        setting ``shear.keep_stars``.
        """
        return {
            "n": n_rows,
            "identified_by": self.identified_by,
            "kept": bool(kept),
            "note": self.note,
        }


def _near_stars(table, x, y) -> np.ndarray:
    """Rows of a version's catalogue within the match radius of a star."""
    from astropy.table import Table

    from blendflag.truth import match_truth

    if x is None or not len(x):
        return np.zeros(len(table), dtype=bool)
    unsheared = "X_UNSHEARED" in table.colnames
    cols = ("X_UNSHEARED", "Y_UNSHEARED") if unsheared else ("X_IMAGE", "Y_IMAGE")
    positions = Table({"X_IMAGE": table[cols[0]], "Y_IMAGE": table[cols[1]]})
    return match_truth(positions, Table({"X": x, "Y": y})) >= 0


def image_stars(context) -> ImageStars:
    """The stars of a pipeline context's detections (see the module's description)."""
    given = context.results.get("stars_given")
    table = context.table
    if given is not None:  # a split image's: the whole catalogue's locus
        stars = ImageStars(given["rows"], given["identified_by"], given.get("note"))
        return stars if stars.rows is None else _with_positions(stars, table)
    match = context.results.get("truth_match")
    if context.truth is not None and match is not None:
        from blendflag.truth import true_stars

        rows = true_stars(match, context.truth)
        return _with_positions(ImageStars(rows, TRUTH), table)
    return locus_stars(
        table, "the catalogue" if context.catalogue is not None else "the detections"
    )


def locus_stars(table, what: str = "the catalogue") -> ImageStars:
    """The stars of a catalogue's stellar locus (:func:`blendflag.psf.stars.catalogue_stars`).

    Parameters
    ----------
    table : astropy.table.Table
        The catalogue's rows (at least ``X_IMAGE``, ``Y_IMAGE``).
    what : str
        The table in the note when a locus column is missing.
    """
    from blendflag.psf.stars import LOCUS_COLUMNS, catalogue_stars

    rows, missing = catalogue_stars(table)
    if rows is None:
        note = (
            f"no star identified: {what} lack {', '.join(missing)} (the stellar locus "
            f"needs {', '.join(LOCUS_COLUMNS)}); stars, if any, are measured as galaxies"
        )
        return ImageStars(None, None, note)
    return _with_positions(ImageStars(rows, LOCUS), table)


def _with_positions(stars: ImageStars, table) -> ImageStars:
    """``stars`` with the positions of its rows (``X_IMAGE``, ``Y_IMAGE`` of the table)."""
    stars.x = np.asarray(table["X_IMAGE"], dtype=np.float64)[stars.rows]
    stars.y = np.asarray(table["Y_IMAGE"], dtype=np.float64)[stars.rows]
    return stars


def complete_without_stars(result, masks: dict, units, star_rows: dict | None, keep: bool):
    """``result.complete_units(masks, units)``, stars left out or kept as units of their own.

    Parameters
    ----------
    result : MetacalResult or VersionCatalogues
    masks : dict
        ``{version: bool per row}``: the selection before the pair rule.
    units : numpy.ndarray or None
        The bootstrap unit of every row (the rotated pair on a simulation).
    star_rows : dict or None
        :meth:`ImageStars.version_rows`; None leaves the selection as it was.
    keep : bool
        ``shear.keep_stars``: keep the stars (each its own unit: no partner).
    """
    if star_rows is None:
        return result.complete_units(masks, units)
    if not keep:
        return result.complete_units({v: m & ~star_rows[v] for v, m in masks.items()}, units)
    kept = result.complete_units(masks, units)
    return {v: kept[v] | (np.asarray(masks[v], dtype=bool) & star_rows[v]) for v in kept}


def stars_summary(per_image: list) -> dict:
    """The ``stars`` block of a comparison from each image's (or tile's) summary.

    Parameters
    ----------
    per_image : list of dict
        :meth:`ImageStars.summary` of each image; None for a stored file
        written before stars were counted.

    Returns
    -------
    dict
        ``n`` (star rows over every image: left out, or kept with ``kept``;
        None when unknown for an image), ``identified_by`` (distinct values
        joined by commas, None when none), ``kept`` (``shear.keep_stars``;
        None when unknown) and ``note``.
    """
    known = [s for s in per_image if s is not None]
    counts = [s.get("n") for s in known]
    n = sum(counts) if known and len(known) == len(per_image) and None not in counts else None
    by = sorted({s["identified_by"] for s in known if s.get("identified_by")})
    notes = sorted({s["note"] for s in known if s.get("note")})
    return {
        "n": n,
        "identified_by": ",".join(by) or None,
        "kept": any(s.get("kept") for s in known) if known else None,
        "note": "; ".join(notes) or None,
    }
