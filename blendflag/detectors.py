"""The detector interface: what a detection backend declares about itself.

Detection itself runs through the ``blendflag_detect`` hook (one detector
answers, the one whose name is ``detect.backend``); a plugin also registers a
:class:`Detector` through ``blendflag_register_detectors`` so that the core can
list the backends that exist (``--backend`` choices, ``bench``, ``plugins``)
without naming any of them.
"""

from __future__ import annotations


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
