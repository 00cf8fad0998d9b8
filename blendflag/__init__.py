"""blendflag: find blended galaxies and measure what removing them does to the shear.

The core imports neither TensorFlow nor GalSim at import time.
"""

from blendflag.errors import BlendflagError
from blendflag.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["BlendflagError", "__version__", "hookimpl"]
