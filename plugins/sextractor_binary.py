"""The real SExtractor binary (Debian ``source-extractor``, or ``sex``) as a detector.

Registers the ``sextractor`` detector backend and answers ``blendflag_detect``
for it; running the binary is :mod:`blendflag_plugins.sextractor_run`.
"""

from __future__ import annotations

import numpy as np

from blendflag import hookimpl
from blendflag.flagging.detectors import Detector
from blendflag_plugins.sextractor_run import find_binary, run_sextractor


class SExtractorDetector(Detector):
    """The SExtractor binary; available when it is on PATH (or ``detect.sextractor_binary``)."""

    name = "sextractor"
    description = "the SExtractor binary (source-extractor or sex on PATH)"

    @classmethod
    def available(cls, config=None) -> bool:
        return find_binary(config) is not None


@hookimpl
def blendflag_register_detectors():
    return [SExtractorDetector]


@hookimpl
def blendflag_detect(image, weight, config):
    """Answer when ``detect.backend`` is ``sextractor``."""
    if config.backend != SExtractorDetector.name:
        return None
    table = run_sextractor(image, config, weight=weight, segmentation=True)
    for col in ("FLUX_AUTO", "FLUXERR_AUTO", "KRON_RADIUS", "A_IMAGE", "B_IMAGE", "THETA_IMAGE"):
        table[col] = np.asarray(table[col], dtype=np.float32)
    return table
