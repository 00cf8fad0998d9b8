"""PSF models: a PSF image at any position of an image.

A survey tile's PSF varies across it; a measurement needs the PSF where each
object (or cell) sits. :class:`PSFModel` is that one question,
``image_at(x, y, size, pixel_scale)``: a normalised (sum 1), centred PSF image
at 1-based image position ``(x, y)``, pixel response included, on the image's
pixel grid. Three implementations:

- :class:`ImagePSF`: one PSF image for the whole image (``--psf psf.fits``);
- :class:`PSFExModel`: a PSFEx ``.psf`` file, read with GalSim's
  ``galsim.des.DES_PSFEx`` in image coordinates (PSFEx models the PSF in
  pixels, pixel included);
- :class:`GalSimPSFModel`: any position-dependent GalSim profile in arcsec
  (the simulations' varying PSF, :mod:`blendflag.simulate.psf_variation`).

:func:`load_psf` reads either kind of file. Images are centred on their
central pixel (0-based ``(size - 1) / 2``; sizes are odd). GalSim is imported
inside the functions.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from blendflag.errors import CatalogueError

#: Side (pixels) of a PSF image drawn from a model when no size is asked for.
DEFAULT_PSF_SIZE = 51


def _odd(size) -> int:
    size = int(size)
    if size < 3:
        raise ValueError(f"a PSF image needs at least 3 pixels a side, got {size}")
    return size | 1


def _centre_to(image: np.ndarray, size: int) -> np.ndarray:
    """Crop or zero-pad a centred square image to ``size`` pixels (centres kept)."""
    ny, nx = image.shape
    out = np.zeros((size, size), dtype=np.float64)
    cy, cx, c = ny // 2, nx // 2, size // 2
    hy = min(c, cy, ny - cy - 1)
    hx = min(c, cx, nx - cx - 1)
    out[c - hy : c + hy + 1, c - hx : c + hx + 1] = image[
        cy - hy : cy + hy + 1, cx - hx : cx + hx + 1
    ]
    return out


class PSFModel:
    """A PSF that can be evaluated at any image position.

    Subclasses implement :meth:`image_at`; :attr:`varies` says whether the
    answer depends on the position (a constant PSF keeps the fast one-PSF
    paths of the engines).
    """

    #: Whether the PSF depends on the position.
    varies: bool = True
    #: What it is, for the JSON and the logs.
    description: str = ""
    #: ``(ny, nx)`` of the image the model describes, when known.
    domain: tuple | None = None

    def image_at(self, x, y, size=None, pixel_scale=None) -> np.ndarray:
        """The PSF at 1-based image position ``(x, y)``.

        Parameters
        ----------
        x, y : float
            Position in the image, 1-based pixels (SExtractor's X_IMAGE, Y_IMAGE).
        size : int or None
            Side of the returned image in pixels (made odd); None: the model's own.
        pixel_scale : float or None
            Arcsec per pixel of the image, for models in sky units; None: the model's.

        Returns
        -------
        numpy.ndarray
            ``(size, size)`` float64, sum 1, centred on the central pixel.
        """
        raise NotImplementedError

    def images_at(self, x, y, size=None, pixel_scale=None) -> np.ndarray:
        """:meth:`image_at` at every position of ``x``, ``y``: ``(n, size, size)`` float64."""
        x = np.atleast_1d(np.asarray(x, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        if not len(x):
            side = _odd(size or DEFAULT_PSF_SIZE)
            return np.zeros((0, side, side))
        return np.stack([self.image_at(a, b, size, pixel_scale) for a, b in zip(x, y, strict=True)])

    def average_image(self, shape, size=None, pixel_scale=None, n_grid: int = 5) -> np.ndarray:
        """The mean PSF over an ``n_grid`` x ``n_grid`` grid spanning an image of ``shape``.

        ``shape`` is the image's ``(ny, nx)``; the result is normalised (sum 1).
        """
        ny, nx = shape
        gx = np.linspace(1.0, float(nx), n_grid)
        gy = np.linspace(1.0, float(ny), n_grid)
        xx, yy = np.meshgrid(gx, gy)
        mean = self.images_at(xx.ravel(), yy.ravel(), size, pixel_scale).mean(axis=0)
        return mean / mean.sum()

    def domain_images(self, shape=None, size=None, pixel_scale=None, n_grid: int = 7):
        """The PSF on an ``n_grid`` x ``n_grid`` grid spanning its image: ``(n_grid^2, S, S)``.

        The image is :attr:`domain`, else ``shape`` (``(ny, nx)``); a model
        read in a section's coordinates (:class:`ShiftedPSF`) still spans the
        whole image, so every section sees the same grid.
        """
        ny, nx = self.domain or shape
        xx, yy = np.meshgrid(np.linspace(1.0, nx, n_grid), np.linspace(1.0, ny, n_grid))
        return self.images_at(xx.ravel(), yy.ravel(), size, pixel_scale)


class ImagePSF(PSFModel):
    """One PSF image for the whole image.

    Parameters
    ----------
    image : numpy.ndarray
        2-d PSF image at the image's pixel scale (pixel included), centred;
        normalised here.
    """

    varies = False

    def __init__(self, image):
        image = np.asarray(image, dtype=np.float64)
        if image.ndim != 2:
            raise ValueError(f"a PSF image must be 2-d, got shape {image.shape}")
        self.image = image / image.sum()
        self.description = f"one PSF image ({image.shape[1]}x{image.shape[0]})"

    def image_at(self, x, y, size=None, pixel_scale=None) -> np.ndarray:
        """The same image at every position (cropped or zero-padded to ``size``)."""
        if size is None or (_odd(size) == self.image.shape[0] == self.image.shape[1]):
            return self.image.copy()
        out = _centre_to(self.image, _odd(size))
        return out / out.sum()


class GalSimPSFModel(PSFModel):
    """A position-dependent GalSim profile in arcsec, drawn on the pixel grid.

    Parameters
    ----------
    profile_at : callable
        ``profile_at(x, y)`` -> ``galsim.GSObject`` (arcsec, flux 1, no pixel)
        at 1-based image position ``(x, y)``; picklable for worker processes.
    pixel_scale : float
        Arcsec per pixel.
    size : int
        Default side of the drawn images, pixels. [default: 51]
    description : str
    """

    def __init__(
        self, profile_at, pixel_scale: float, size: int = DEFAULT_PSF_SIZE, description=""
    ):
        self.profile_at = profile_at
        self.pixel_scale = float(pixel_scale)
        self.size = _odd(size)
        self.description = description or "GalSim profile per position"

    def image_at(self, x, y, size=None, pixel_scale=None) -> np.ndarray:
        """The profile at ``(x, y)`` drawn with the pixel response, sum 1."""
        side = _odd(size or self.size)
        scale = float(pixel_scale or self.pixel_scale)
        img = self.profile_at(float(x), float(y)).drawImage(nx=side, ny=side, scale=scale)
        arr = img.array.astype(np.float64)
        return arr / arr.sum()


class PSFExModel(PSFModel):
    """A PSFEx model (``.psf`` file), in image coordinates.

    Read with ``galsim.des.DES_PSFEx`` without a WCS: the profile is in
    pixels and already includes the pixel response, so it is drawn with
    ``method="no_pixel"`` on a grid of scale 1.

    Parameters
    ----------
    path : str or path-like
        The ``.psf`` file written by PSFEx (``PSFVAR_KEYS`` X_IMAGE, Y_IMAGE or
        XWIN_IMAGE, YWIN_IMAGE).
    size : int or None
        Default side of the drawn images, pixels; None: the model's own
        ``PSFAXIS1`` times ``PSF_SAMP`` (made odd).
    interpolant : str or None
        GalSim interpolant of the PSFEx samples; None: ``DES_PSFEx.getPSF``'s
        own (Lanczos-3). When PSFEx does not sample at the image's pixels
        this matters for m: "lanczos15" moved m by -5.5e-3 in the noiseless
        test of docs/results.md. [default: None]
    undo_resampling : bool
        Divide out the sharpening of PSFEx's own star resampling
        (:mod:`blendflag.psf.psfex_resampling`), which leaves the model 0.3-0.4 %
        too small. [default: True]

    Raises
    ------
    CatalogueError
        The file is not a PSFEx model GalSim can read.
    """

    def __init__(self, path, size=None, interpolant=None, undo_resampling=True):
        import galsim.des

        self.path = Path(path)
        self.interpolant = interpolant
        self.undo_resampling = bool(undo_resampling)
        try:
            self._psfex = galsim.des.DES_PSFEx(str(self.path))
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise CatalogueError(f"{self.path.name} is not a PSFEx model: {exc}") from None
        if self.undo_resampling:
            from blendflag.psf import psfex_resampling

            self._psfex.basis = psfex_resampling.undo_resampling(
                self._psfex.basis, self._psfex.sample_scale
            )
        _, ny, nx = self._psfex.basis.shape
        self.size = _odd(size or math.ceil(max(nx, ny) * self._psfex.sample_scale))
        self.varies = self._psfex.fit_order > 0
        self.description = (
            f"PSFEx {self.path.name} (degree {self._psfex.fit_order}, {nx}x{ny} "
            f"samples of {self._psfex.sample_scale:g} px"
            f"{'; its resampling undone' if self.undo_resampling else ''})"
        )

    def __getstate__(self):  # the GalSim reader is rebuilt in a worker process
        keys = ("path", "size", "interpolant", "undo_resampling", "domain")
        return {k: getattr(self, k) for k in keys}

    def __setstate__(self, state):
        self.__init__(state["path"], state["size"], state["interpolant"], state["undo_resampling"])
        self.domain = state["domain"]

    def image_at(self, x, y, size=None, pixel_scale=None) -> np.ndarray:
        """The PSFEx model at ``(x, y)`` on the image's pixels (``pixel_scale`` is not used)."""
        import galsim

        side = _odd(size or self.size)
        position = galsim.PositionD(float(x), float(y))
        if self.interpolant is None:
            profile = self._psfex.getPSF(position)
        else:
            profile = galsim.InterpolatedImage(
                galsim.Image(self._psfex.getPSFArray(position).astype(np.float64)),
                scale=self._psfex.sample_scale,
                flux=1.0,
                x_interpolant=self.interpolant,
            )
        arr = profile.drawImage(nx=side, ny=side, scale=1.0, method="no_pixel").array
        arr = arr.astype(np.float64)
        return arr / arr.sum()


class ShiftedPSF(PSFModel):
    """A PSF model read in the coordinates of a section of its image.

    A sub-tile starting at 0-based pixel ``(x0, y0)`` of the whole image
    asks for the PSF at its own positions; the model is evaluated at
    ``(x + x0, y + y0)``. Pickles as the model it wraps (PSFEx models are
    re-read in a worker).

    Parameters
    ----------
    model : PSFModel
        The whole image's PSF model.
    x0, y0 : float
        Offset of the section in the whole image, pixels.
    """

    def __init__(self, model: PSFModel, x0: float, y0: float):
        self.model = model
        self.x0, self.y0 = float(x0), float(y0)
        self.varies = model.varies
        self.description = model.description

    def image_at(self, x, y, size=None, pixel_scale=None) -> np.ndarray:
        """The wrapped model at ``(x + x0, y + y0)``."""
        return self.model.image_at(float(x) + self.x0, float(y) + self.y0, size, pixel_scale)

    def domain_images(self, shape=None, size=None, pixel_scale=None, n_grid: int = 7):
        """The wrapped model's grid over the whole image (its ``domain``), not the section's."""
        if self.model.domain is None:
            raise ValueError("the whole image's shape is not known (the model's domain)")
        return self.model.domain_images(None, size, pixel_scale, n_grid)


def is_psfex_file(path) -> bool:
    """Whether ``path`` is a PSFEx model: a table HDU with ``PSF_MASK`` and ``POLNAME1``."""
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            return any(
                isinstance(h, fits.BinTableHDU)
                and "POLNAME1" in h.header
                and "PSF_MASK" in (h.columns.names or [])
                for h in hdul
            )
    except (OSError, ValueError):
        return False


def load_psf(path, max_side: int = 256, recentre: bool = False):
    """A PSF file as a :class:`PSFModel` and its header.

    A PSFEx ``.psf`` file becomes a :class:`PSFExModel`, any other FITS file
    is read as a PSF image (:class:`ImagePSF`).

    Returns
    -------
    model : PSFModel
    header : astropy.io.fits.Header or None
        The PSF image's header (None for a PSFEx file).

    Raises
    ------
    CatalogueError
        An unreadable file, a PSF image with NaN pixels, no positive flux, or
        larger than ``max_side`` pixels (an image, not a PSF).
    """
    from blendflag.io.images import read_image

    path = Path(path)
    if path.is_file() and is_psfex_file(path):
        return PSFExModel(path), None
    from blendflag.psf.checks import check_psf_image

    img, header = read_image(path, "PSF image")
    if max(img.shape) > max_side:
        raise CatalogueError(
            f"PSF image {path.name} is {img.shape[1]}x{img.shape[0]}: "
            "expected a PSF stamp or a PSFEx .psf file, not an image"
        )
    # the checks at the door: odd, centred, finite, positive (re-centred if asked)
    img = check_psf_image(img, f"PSF image {path.name}", recentre=recentre)
    return ImagePSF(img), header


def psf_image_and_model(path, shape, recentre: bool = False):
    """The PSF of ``compare``: one checked image, and the varying model if there is one.

    Parameters
    ----------
    path : path-like
        A PSF image or a PSFEx ``.psf`` file (:func:`load_psf`).
    shape : (int, int)
        The image's ``(ny, nx)``: a PSFEx model's image is taken at its centre.
    recentre : bool
        As ``compare --recentre-psf``.

    Returns
    -------
    psf_image : numpy.ndarray
        The PSF image (the model at the image centre for PSFEx), checked.
    model : PSFModel or None
        The PSFEx model, None for a PSF image (the one-PSF paths).
    header : astropy.io.fits.Header or None
        The PSF image's header.

    Raises
    ------
    CatalogueError
        As :func:`load_psf`, or a PSFEx model whose image at the centre fails
        :func:`blendflag.psf.checks.check_psf_image`.
    """
    from blendflag.psf.checks import check_psf_image

    model, header = load_psf(path, recentre=recentre)
    if isinstance(model, ImagePSF):
        return model.image, None, header
    ny, nx = shape
    model.domain = (int(ny), int(nx))
    image = model.image_at((nx + 1) / 2.0, (ny + 1) / 2.0)
    # re-centred: PSFEx centres its model on the stars only on average (0.1 px
    # off at the centre of a simulated tile); the model itself is used as it is
    image = check_psf_image(image, f"PSF model {Path(path).name} at the centre", recentre=True)
    return image, model, header
