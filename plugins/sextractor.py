"""SExtractor's deblending as a blend flagger (backends: sep, or the real binary).

Catalogue level
    ``BLEND_SEXTRACTOR = (FLAGS & 2) != 0``: SExtractor (and sep, whose
    OBJ_MERGED we map to FLAGS value 2) marks objects that were deblended from
    a neighbour.

Stamp level (for ``evaluate``)
    Rule: run the detector on the stamp; the *central detection* is the one
    nearest the stamp centre within ``match_radius`` pixels. The stamp is a
    blend if the central detection carries the deblend flag (FLAGS & 2).
    When nothing is detected near the centre the stamp is classified as not a
    blend (SExtractor saw no blend). A blend that SExtractor did not split (one
    detection, no flag) is therefore a miss: it is exactly the failure mode the
    original study measured.
"""

from __future__ import annotations

import numpy as np

from blendflag import hookimpl
from blendflag.errors import CatalogueError
from blendflag.flagging.flaggers import Flagger, FlagResult

DEBLENDED = 2


class SExtractorFlagger(Flagger):
    """Blend flag from SExtractor's deblending (FLAGS bit value 2).

    Options
    -------
    backend : str
        ``"sep"`` or ``"sextractor"`` (the binary) for stamp-level work. [default: "sep"]
    match_radius : float
        Pixels from the stamp centre within which a detection is the central
        source. [default: 5.0]
    """

    name = "sextractor"
    needs_stamps = False
    cli_options = ("backend",)

    def flag_catalogue(self, context) -> FlagResult:
        table = context.table
        if "FLAGS" not in table.colnames:
            raise CatalogueError(
                "catalogue has no FLAGS column: the sextractor flagger reads SExtractor's "
                "FLAGS (run `blendflag-shear detect` or SExtractor with FLAGS in the parameters)"
            )
        flags = np.asarray(table["FLAGS"]).astype(np.int64)
        return FlagResult(flag=(flags & DEBLENDED) != 0)

    def flag_stamps(self, stamps: np.ndarray, noise_sigma=None) -> FlagResult:
        from blendflag_plugins.stamp_detect import classify_stamps

        return classify_stamps(
            stamps,
            backend=self.options.get("backend", "sep"),
            match_radius=float(self.options.get("match_radius", 5.0)),
            noise_sigma=noise_sigma,
        )

    def provenance(self):
        return [("BF_SXRUL", "FLAGS&2", "BLEND_SEXTRACTOR rule: deblended bit")]


@hookimpl
def blendflag_register_flaggers():
    return [SExtractorFlagger]
