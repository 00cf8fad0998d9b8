"""Stamps as metacalibration shows them to a flagger.

``compare`` applies every flagger to the five metacalibration images of each
object, so that the selection response of a blend cut is measured (the
``flag_metacal_blends`` stage, docs/architecture.md). Those images are not the
stamps a flagger usually sees: the PSF is
deconvolved, the image sheared and reconvolved with a round, slightly dilated
PSF, and the noise correction is added, so they are smoother and their noise is
correlated. A flagger that selects on them must be judged (``evaluate
--metacal``) and trained (``metacal_fraction`` of the training configs) on
such images too; this module makes them with any shear engine.
"""

from __future__ import annotations

import os

import numpy as np

from blendflag.errors import BlendflagError

#: Stamps from which the images are made in worker processes (below: serially).
PARALLEL_FROM = 500


def metacal_stamps(
    engine_cls,
    shear_config,
    stamps,
    psf,
    pixel_scale,
    noise_sigma,
    seed: int,
    version: str = "noshear",
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One metacalibration image of every stamp.

    Parameters
    ----------
    engine_cls : type
        A :class:`~blendflag.shear.ShearEngine` subclass that can return images.
    shear_config : blendflag.config.ShearConfig
        The ``shear`` section of the pipeline config (step, stamp size, noise
        correction), as ``compare`` uses it.
    stamps : numpy.ndarray
        ``(n, S, S)`` stamps, ADU.
    psf : numpy.ndarray
        PSF image at the stamps' pixel scale.
    pixel_scale : float
        Arcsec per pixel.
    noise_sigma : float or numpy.ndarray
        Noise sigma of each stamp, ADU.
    seed : int
        Seed of the noise-correction fields and of ``version="random"``.
    version : str
        ``noshear``, ``1p``, ``1m``, ``2p``, ``2m``, or ``random`` (each stamp
        one of the five, drawn from ``seed``). [default: "noshear"]
    workers : int or None
        Processes. [default: every core from 500 stamps on, else serial]

    Returns
    -------
    images : numpy.ndarray
        ``(n, S, S)`` float32, ADU; zeros where the engine could not render a stamp.
    rendered : numpy.ndarray
        bool, False where it could not.

    Raises
    ------
    BlendflagError
        An unknown ``version``, or a PSF the engine cannot use (for example an
        undersampled one).
    """
    from blendflag.shear.driver import measure_parallel
    from blendflag.shear.results import METACAL_VERSIONS

    if version != "random" and version not in METACAL_VERSIONS:
        raise BlendflagError(
            f"unknown metacal version {version!r} (allowed: {', '.join(METACAL_VERSIONS)}, random)"
        )
    stamps = np.asarray(stamps, dtype=np.float32)
    n = len(stamps)
    if workers is None:
        workers = (os.cpu_count() or 1) if n >= PARALLEL_FROM else 1
    result = measure_parallel(
        engine_cls,
        shear_config,
        stamps,
        psf,
        pixel_scale,
        noise_sigma,
        seed=int(seed),
        workers=workers,
        return_images=True,
    )
    if version == "random":
        pick = np.random.default_rng([int(seed), 0x6D63]).integers(0, len(METACAL_VERSIONS), n)
    else:
        pick = np.full(n, METACAL_VERSIONS.index(version))
    images = np.zeros(stamps.shape, dtype=np.float32)
    for k, name in enumerate(METACAL_VERSIONS):
        chosen = pick == k
        images[chosen] = result.images[name][chosen]
    rendered = np.any(images != 0, axis=(1, 2))
    return images, rendered
