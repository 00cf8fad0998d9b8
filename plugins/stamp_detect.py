"""Stamp-level SExtractor classification (sep or the SExtractor binary).

Rule (the ``sextractor`` flagger on stamps)
-------------------------------------------
1. Noise: sigma = 1.4826 x MAD of the stamp's 3-pixel border, background = its
   median (simulated stamps have none; real cut-outs may).
2. Detection with the study's settings: threshold 1.5 sigma, minimum area 5
   pixels, 32 deblending thresholds, minimum contrast 0.005.
3. The *central detection* is the detection nearest to the stamp centre, if it
   lies within ``match_radius`` pixels.
4. The stamp is a **blend** when the central detection carries the deblend flag
   (SExtractor FLAGS & 2; sep OBJ_MERGED). No central detection, or a central
   detection that was not deblended, is **not a blend**: a pair SExtractor did
   not split is a blend it missed, which is what the study measured.
5. The **deblended count** (sep only; the baseline of a network's count head):
   the detections of step 2 whose centres fall inside the central object's
   undeblended segment (the same extraction with deblending off, i.e. the
   connected pixels above the threshold), at least 1.
"""

from __future__ import annotations

import numpy as np

from blendflag.flagging.flaggers import FlagResult
from blendflag.io.stamps import stamp_border_median, stamp_noise_sigma

DEBLENDED = 2


def classify_stamps(
    stamps, backend: str = "sep", match_radius: float = 5.0, noise_sigma=None, detect_config=None
) -> FlagResult:
    """Blend flag of each stamp from SExtractor-style deblending.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, S, S)`` stamps (ADU), source at the centre.
    backend : str
        ``"sep"`` or ``"sextractor"`` (the binary). [default: "sep"]
    match_radius : float
        Largest distance of the central detection from the centre, in pixels.
        [default: 5.0]
    noise_sigma : array_like or None
        Known noise sigma per stamp (ADU); estimated from the border if None.
    detect_config : blendflag.config.DetectConfig or None
        Thresholds; the defaults are the study's.

    Returns
    -------
    FlagResult
        ``flag`` per stamp; ``probability`` is None (SExtractor has none).
    """
    from blendflag.config import DetectConfig

    stamps = np.ascontiguousarray(stamps, dtype=np.float32)
    config = detect_config or DetectConfig()
    sigma = (
        stamp_noise_sigma(stamps)
        if noise_sigma is None
        else np.broadcast_to(np.asarray(noise_sigma, dtype=np.float32), (len(stamps),))
    )
    background = stamp_border_median(stamps)
    if backend == "sextractor":
        from blendflag_plugins.sextractor_run import detect_stamps_with_binary

        catalogues = detect_stamps_with_binary(stamps - background[:, None, None], sigma, config)
    elif backend == "sep":
        import sep

        # sep allocates its pixel stack on every call: a full-image size (set by
        # the detector) would make each small stamp cost a huge allocation
        sep.set_extract_pixstack(max(4 * stamps.shape[1] * stamps.shape[2], 10_000))
        catalogues = [
            _detect_one_sep(s - b, float(sg), config)
            for s, b, sg in zip(stamps, background, sigma, strict=True)
        ]
    else:
        from blendflag.errors import BlendflagError

        raise BlendflagError(f"unknown sextractor backend {backend!r} (sep, sextractor)")
    centre = (stamps.shape[2] - 1) / 2.0, (stamps.shape[1] - 1) / 2.0
    flags = np.array(
        [_central_is_deblended(c, centre, match_radius) for c in catalogues], dtype=bool
    )
    n_sources = None
    if backend == "sep":
        n_sources = np.array(
            [
                _deblended_count(s - b, float(sg), config, c, centre, match_radius)
                for s, b, sg, c in zip(stamps, background, sigma, catalogues, strict=True)
            ],
            dtype=np.int16,
        )
    return FlagResult(flag=flags, n_sources=n_sources)


def _deblended_count(stamp, sigma: float, config, catalogue, centre, match_radius) -> int:
    """Deblended detections inside the central object's undeblended segment (>= 1)."""
    import sep

    x, y, _ = catalogue
    if len(x) == 0:
        return 1
    data = np.ascontiguousarray(stamp, dtype=np.float64)
    try:
        parents, seg = sep.extract(
            data,
            config.thresh,
            err=sigma,
            minarea=config.minarea,
            deblend_cont=1.0,
            clean=False,
            segmentation_map=True,
        )
    except Exception:  # noqa: BLE001 - sep's pixel-stack overflow on a pathological stamp
        return 1
    if len(parents) == 0:
        return 1
    d = np.hypot(parents["x"] - centre[0], parents["y"] - centre[1])
    i = int(np.argmin(d))
    if d[i] > match_radius:
        return 1
    ix = np.clip(np.rint(x).astype(int), 0, seg.shape[1] - 1)
    iy = np.clip(np.rint(y).astype(int), 0, seg.shape[0] - 1)
    return max(1, int(np.sum(seg[iy, ix] == i + 1)))


def _detect_one_sep(stamp: np.ndarray, sigma: float, config):
    """(x, y, FLAGS) of the detections on one stamp, 0-based pixels."""
    import sep

    data = np.ascontiguousarray(stamp, dtype=np.float64)
    try:
        objects = sep.extract(
            data,
            config.thresh,
            err=sigma,
            minarea=config.minarea,
            deblend_nthresh=config.deblend_nthresh,
            deblend_cont=config.deblend_cont,
            clean=config.clean,
            clean_param=config.clean_param,
        )
    except Exception:  # noqa: BLE001 - sep's pixel-stack overflow on a pathological stamp
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int16)
    flags = np.where((objects["flag"] & sep.OBJ_MERGED) != 0, DEBLENDED, 0).astype(np.int16)
    return objects["x"], objects["y"], flags


def _central_is_deblended(catalogue, centre, match_radius: float) -> bool:
    x, y, flags = catalogue
    if len(x) == 0:
        return False
    d = np.hypot(np.asarray(x) - centre[0], np.asarray(y) - centre[1])
    i = int(np.argmin(d))
    return bool(d[i] <= match_radius and (int(flags[i]) & DEBLENDED))
