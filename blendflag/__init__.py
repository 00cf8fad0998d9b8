"""blendflag: find blended galaxies and measure what removing them does to the shear.

The core imports neither TensorFlow nor GalSim at import time.
"""

from importlib import metadata

from blendflag.errors import BlendflagError
from blendflag.hookspecs import hookimpl

try:  # one place holds the version: pyproject.toml
    __version__ = metadata.version("blendflag")
except metadata.PackageNotFoundError:  # a source tree never installed
    __version__ = "unknown"

__all__ = ["BlendflagError", "__version__", "hookimpl"]
