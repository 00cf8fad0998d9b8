"""A PSF that varies across a simulated field: linear size and ellipticity gradients.

Real tiles have a PSF that changes across the focal plane. ``simulate-field
--varying-psf`` draws every galaxy (and star) with the preset's PSF changed
at its position: with ``u``, ``v`` the position relative to the image centre
in units of half the image's width and height (-1 at the left/bottom edge,
+1 at the right/top edge),

- FWHM (or Airy size) ``= fwhm * (1 + dfwhm_x u + dfwhm_y v)`` (a dilation),
- ``g1 = psf.g1 + dg1_x u``, ``g2 = psf.g2 + dg2_y v`` (reduced shear of the PSF).

:class:`VaryingPSF` holds the model; its FITS cards (:meth:`VaryingPSF.cards`,
written into every file of the field) and :meth:`VaryingPSF.from_header`
rebuild it, so the true PSF can be evaluated at any position later
(:meth:`VaryingPSF.psf_model` gives a :class:`blendflag.psf.model.PSFModel`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from blendflag.simulate.presets import DatasetConfig, PSFSpec


@dataclass(frozen=True)
class PSFVariation:
    """Gradients of the PSF across the image (dimensionless).

    Attributes
    ----------
    dfwhm_x, dfwhm_y : float
        Fractional change of the PSF size from the centre to the right (top)
        edge. [default: 0.10, 0.05]
    dg1_x : float
        Change of the PSF's g1 from the centre to the right edge. [default: 0.03]
    dg2_y : float
        Change of the PSF's g2 from the centre to the top edge. [default: 0.03]
    """

    dfwhm_x: float = 0.10
    dfwhm_y: float = 0.05
    dg1_x: float = 0.03
    dg2_y: float = 0.03


@dataclass(frozen=True)
class VaryingPSF:
    """The preset's PSF with :class:`PSFVariation` gradients over an ``nx`` x ``ny`` image.

    Attributes
    ----------
    spec : PSFSpec
        The PSF at the image centre (sizes in arcsec).
    variation : PSFVariation
    nx, ny : int
        Image width and height, pixels.
    """

    spec: PSFSpec
    variation: PSFVariation
    nx: int
    ny: int

    def _uv(self, x, y):
        u = (np.asarray(x, dtype=np.float64) - (self.nx + 1) / 2.0) / (self.nx / 2.0)
        v = (np.asarray(y, dtype=np.float64) - (self.ny + 1) / 2.0) / (self.ny / 2.0)
        return u, v

    def dilation_at(self, x, y):
        """Size of the PSF at 1-based ``(x, y)`` over its size at the centre."""
        u, v = self._uv(x, y)
        return 1.0 + self.variation.dfwhm_x * u + self.variation.dfwhm_y * v

    def fwhm_at(self, x, y):
        """FWHM of the PSF (arcsec; for Airy, 1.03 lambda/D dilated) at 1-based ``(x, y)``."""
        base = self.spec.fwhm if self.spec.type != "airy" else 1.03 * self.spec.lam_over_diam
        return base * self.dilation_at(x, y)

    def shear_at(self, x, y):
        """The PSF's reduced shear ``(g1, g2)`` at 1-based ``(x, y)``."""
        u, v = self._uv(x, y)
        return self.spec.g1 + self.variation.dg1_x * u, self.spec.g2 + self.variation.dg2_y * v

    def profile_at(self, x, y, gsparams=None):
        """The PSF at 1-based ``(x, y)`` as a GalSim object (arcsec, flux 1, no pixel)."""
        from blendflag.simulate.galaxies import make_psf

        round_spec = replace(self.spec, g1=0.0, g2=0.0)
        psf = make_psf(_config_with(round_spec), gsparams).dilate(float(self.dilation_at(x, y)))
        g1, g2 = self.shear_at(x, y)
        return psf.shear(g1=float(g1), g2=float(g2))

    def psf_model(self, pixel_scale: float, size: int | None = None):
        """This PSF as a :class:`blendflag.psf.model.GalSimPSFModel` (drawn with the pixel)."""
        from blendflag.psf.model import GalSimPSFModel

        model = GalSimPSFModel(
            self.profile_at,
            pixel_scale,
            size or self.spec.image_size,
            description=f"simulated varying {self.spec.type} PSF",
        )
        model.domain = (int(self.ny), int(self.nx))
        return model

    def cards(self) -> list:
        """FITS cards ``(key, value, comment)`` that :meth:`from_header` reads back."""
        s, v = self.spec, self.variation
        return [
            ("PSFVARY", True, "PSF varies across the image (see PSF* cards)"),
            ("PSFTYPE", s.type, "PSF profile at the image centre"),
            ("PSFFWHM", s.fwhm, "[arcsec] PSF FWHM at the centre"),
            ("PSFBETA", s.beta, "Moffat beta"),
            ("PSFLOD", s.lam_over_diam, "[arcsec] Airy lambda/D at the centre"),
            ("PSFOBSC", s.obscuration, "Airy obscuration"),
            ("PSFG1", s.g1, "PSF g1 at the centre"),
            ("PSFG2", s.g2, "PSF g2 at the centre"),
            ("PSFDFWX", v.dfwhm_x, "PSF size: fractional change centre->right edge"),
            ("PSFDFWY", v.dfwhm_y, "PSF size: fractional change centre->top edge"),
            ("PSFDG1X", v.dg1_x, "PSF g1: change centre->right edge"),
            ("PSFDG2Y", v.dg2_y, "PSF g2: change centre->top edge"),
            ("PSFNX", self.nx, "[pix] image width of the PSF variation"),
            ("PSFNY", self.ny, "[pix] image height of the PSF variation"),
        ]

    @classmethod
    def from_header(cls, header) -> VaryingPSF | None:
        """Rebuild the model from :meth:`cards` in a FITS header; None without ``PSFVARY``."""
        if header is None or not header.get("PSFVARY", False):
            return None
        spec = PSFSpec(
            type=str(header["PSFTYPE"]),
            fwhm=float(header["PSFFWHM"]),
            beta=float(header["PSFBETA"]),
            lam_over_diam=float(header["PSFLOD"]),
            obscuration=float(header["PSFOBSC"]),
            g1=float(header["PSFG1"]),
            g2=float(header["PSFG2"]),
        )
        variation = PSFVariation(
            dfwhm_x=float(header["PSFDFWX"]),
            dfwhm_y=float(header["PSFDFWY"]),
            dg1_x=float(header["PSFDG1X"]),
            dg2_y=float(header["PSFDG2Y"]),
        )
        return cls(spec, variation, int(header["PSFNX"]), int(header["PSFNY"]))


def _config_with(spec: PSFSpec) -> DatasetConfig:
    """A config that only carries ``spec`` (what :func:`make_psf` reads)."""
    return DatasetConfig(psf=spec)
