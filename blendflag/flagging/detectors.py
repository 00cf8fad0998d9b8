"""The detector interface: what a detection backend declares about itself.

Detection itself runs through the ``blendflag_detect`` hook (one detector
answers, the one whose name is ``detect.backend``); a plugin also registers a
:class:`Detector` through ``blendflag_register_detectors`` so that the core can
list the backends that exist (``--backend`` choices, ``bench``, ``plugins``)
without naming any of them. A detector may also return its segmentation map
in the table's meta (:func:`pop_segmentation`).
"""

from __future__ import annotations

import numpy as np

from blendflag.errors import PluginError


class Detector:
    """Base class of detector declarations.

    Subclasses set ``name`` (the ``detect.backend`` value their
    ``blendflag_detect`` implementation answers for) and, when the backend needs
    something that may be missing (a binary, an optional package), override
    :meth:`available`.
    """

    #: Unique backend name, the value of ``detect.backend`` and ``--backend``.
    name: str = ""
    #: One line for ``blendflag-shear plugins``.
    description: str = ""

    @classmethod
    def available(cls, config=None) -> bool:
        """Whether the backend can run here.

        Parameters
        ----------
        config : blendflag.config.DetectConfig or None
            Detection settings (for example the path of a binary). [default: None]
        """
        return True


#: Key of ``table.meta`` under which a detector may return its segmentation map.
SEGMENTATION_KEY = "segmentation"


def pop_segmentation(table, shape) -> np.ndarray | None:
    """Take a detector's segmentation map out of its table (see ``blendflag_detect``).

    The map is removed from ``table.meta`` so that no copy of the table, and
    no catalogue written from it, carries a 2-d array.

    Parameters
    ----------
    table : astropy.table.Table
        The detector's answer; ``table.meta["segmentation"]`` (if present) is
        popped.
    shape : tuple of int
        ``(ny, nx)`` of the image the detector ran on (pixels).

    Returns
    -------
    numpy.ndarray or None
        int32 ``(ny, nx)``: 0 for sky, the NUMBER of the object a pixel
        belongs to otherwise; None when the detector gave no map.

    Raises
    ------
    PluginError
        The map is not an integer array of the image's shape.
    """
    seg = table.meta.pop(SEGMENTATION_KEY, None)
    if seg is None:
        return None
    seg = np.asarray(seg)
    if seg.shape != tuple(shape) or not np.issubdtype(seg.dtype, np.integer):
        raise PluginError(
            f"the detector's segmentation map must be an integer {tuple(shape)} array like "
            f"the image, got {seg.dtype} {seg.shape}"
        )
    return seg.astype(np.int32, copy=False)


_MANAGERS: dict = {}


def detect_with_plugins(image, weight, config=None):
    """Detect on ``image`` with the ``blendflag_detect`` hook of the installed plugins.

    A module-level function (picklable), so that worker processes can detect
    as the pipeline's ``detect`` stage does: the plugin manager is built once
    per process.

    Parameters
    ----------
    image, weight : numpy.ndarray
        Pixels (ADU) and inverse variance.
    config : blendflag.config.DetectConfig or None
        Detection settings (``backend`` names the detector). [default: the packaged ones]

    Returns
    -------
    astropy.table.Table
        The detector's catalogue (``X_IMAGE``, ``Y_IMAGE``, 1-based pixels),
        its segmentation map removed.

    Raises
    ------
    PluginError
        No detector answered for ``config.backend``.
    """
    from blendflag.config import DetectConfig
    from blendflag.plugins import get_plugin_manager

    config = config or DetectConfig()
    pm = _MANAGERS.get("pm")
    if pm is None:
        pm = _MANAGERS["pm"] = get_plugin_manager()
    table = pm.hook.blendflag_detect(image=image, weight=weight, config=config)
    if table is None:
        raise PluginError(f"no detector answered for backend {config.backend!r}")
    pop_segmentation(table, image.shape)
    return table
