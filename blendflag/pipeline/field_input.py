"""What `compare` measures: a simulated field (or ±g pair of fields) or the user's files.

:class:`FieldInput` holds one image with its PSF, weight, optional catalogue
and, for simulations, the truth and the applied shear. :func:`simulated_inputs`
makes the default: the CFIS r-band sky with 90-degree rotated pairs and its -g
twin; :func:`file_input` reads the user's image, PSF, catalogue and weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from blendflag.errors import BlendflagError, CatalogueError

if TYPE_CHECKING:
    from astropy.table import Table

#: The default `compare` run: the CFIS r-band sky from number counts, at the
#: survey's noise, with a known shear.
DEFAULT_DATASET = "cfis_survey"
DEFAULT_SHEAR = (0.02, 0.0)
DEFAULT_SEED = 1
#: Galaxies of a default field (half of them the 90-degree rotated copies),
#: drawn twice (+g and -g), per population: a ``counts`` sky (every galaxy
#: down to 2.5 mag below the depth, about 1 in 4.5 detected: about 4,500
#: detections on the CFIS sky) or a log-uniform preset (every galaxy detected:
#: about 6,000 measurements).
DEFAULT_N_GALAXIES = {"counts": 20000, "loguniform": 6000}
#: Noise sigma of a default field (ADU): a ``counts`` preset's own (its
#: survey's sky, ``default_noise``); for a log-uniform preset a deep field
#: (median S/N ~200), the original comparison's.
DEEP_NOISE = 2.0


def default_n_galaxies(preset) -> int:
    """Galaxies of `compare`'s default field on ``preset`` (:data:`DEFAULT_N_GALAXIES`)."""
    return DEFAULT_N_GALAXIES[preset.galaxy.population]


def default_noise(preset) -> float:
    """Noise sigma (ADU) of `compare`'s default field on ``preset``."""
    return preset.default_noise if preset.galaxy.population == "counts" else DEEP_NOISE


@dataclass
class FieldInput:
    """The image data `compare` works on.

    Attributes
    ----------
    image, weight, psf : numpy.ndarray
        Science image (ADU), inverse-variance weight (or None), PSF image
        (for a varying PSF, the model at the image centre).
    psf_model : blendflag.psf.model.PSFModel or None
        A PSF that varies across the image (a PSFEx ``.psf`` file), evaluated
        at every object by engines that can; None: ``psf`` everywhere.
    header : astropy.io.fits.Header or None
    pixel_scale : float
        Arcsec per pixel.
    catalogue : blendflag.io.catalog.Catalogue or None
        A user catalogue; None detects sources.
    true_shear : tuple or None
        The applied shear of a simulated field.
    truth : astropy.table.Table or None
        The simulated galaxies (positions, PAIR_ID).
    noise_sigma : float or None
        Known noise sigma (ADU), for simulated fields.
    reference_noise : float or None
        Noise sigma (ADU) of the depth at which the truth defines blends (the
        preset's ``default_noise``), for network flaggers with a reference
        plane; None takes the image's noise.
    sign : int
        +1, or -1 for the -g twin of a ±g pair (the same galaxies and pixel
        noise sheared by -g). [default: 1]
    description : dict
        Where the data came from (for the JSON).
    object_keys : numpy.ndarray or None
        int64 identity of each catalogue row (its row in the whole image's
        catalogue): keys its noise-correction field and neighbour fill, so
        that a split image measures every object as the whole one does.
    segmentation, segment_ids : numpy.ndarray or None
        A segmentation map made beforehand (int32, the image's shape) and the
        segment id of each catalogue row, for neighbour masking; None lets
        the pipeline run the detector for them.
    light_models : numpy.ndarray or None
        ``(m, 6)`` X_IMAGE, Y_IMAGE (this image's pixels), FLUX_AUTO, A_IMAGE,
        B_IMAGE, THETA_IMAGE of every source that may neighbour the
        catalogue's (a split image's: those of the whole catalogue in its
        region); None: the catalogue's own.
    stars : dict or None
        A split image's stars, found on the whole catalogue: ``rows`` (bool
        per catalogue row, or None), ``identified_by``, ``note`` (see
        :class:`blendflag.shear.star_cut.ImageStars`); None: the pipeline
        finds them.
    field : str or None
        The key of the ±g pair the image belongs to (a simulation's
        ``DATASET:SEED:NGAL``, a list file's ``pair:<name>``, else the image
        file's identity, :func:`blendflag.io.images.image_identity`):
        the seed of its noise-correction fields is drawn from it and the run's
        seed, so every pair gets its own fields and both images of a pair the
        same (:func:`blendflag.pipeline.compare.field_seed`); None: the run's
        seed itself.
    frame : tuple or None
        A split image's place in the whole: ``((x0, y0), (ny, nx))``, its
        corner's offset (pixels) and the whole image's shape, so its
        bootstrap cells are the whole image's (:mod:`blendflag.shear.units`);
        None: the image is whole.
    """

    image: np.ndarray
    weight: np.ndarray | None
    psf: np.ndarray
    header: object = None
    pixel_scale: float = 1.0
    catalogue: object = None
    true_shear: tuple | None = None
    truth: Table | None = None
    noise_sigma: float | None = None
    reference_noise: float | None = None
    sign: int = 1
    description: dict = field(default_factory=dict)
    psf_model: object = None
    object_keys: np.ndarray | None = None
    segmentation: np.ndarray | None = None
    segment_ids: np.ndarray | None = None
    light_models: np.ndarray | None = None
    stars: dict | None = None
    field: str | None = None
    frame: tuple | None = None


def simulated_preset(dataset=DEFAULT_DATASET, density=None):
    """The dataset preset, with its galaxy density replaced when ``density`` is given.

    A log-uniform preset takes ``density`` as its ``field.density``. A
    number-counts preset (``galaxy.population: counts``) has its counts scaled
    by ``density / drawn density`` at every magnitude, so that ``density``
    galaxies per arcmin^2 are drawn down to the faint limit (the same
    magnitudes, sizes and shapes, more of them: "LSST at twice the density" of
    Sheldon et al. 2020 is ``density = 2 x`` the preset's).

    Raises
    ------
    BlendflagError
        A density that is not a positive number (galaxies per arcmin^2).
    """
    from dataclasses import replace

    from blendflag.simulate.presets import load_dataset

    preset = load_dataset(dataset)
    if density is None:
        return preset
    if not (isinstance(density, (int, float)) and np.isfinite(density) and density > 0):
        raise BlendflagError(
            f"density must be a positive number of galaxies per arcmin^2, got {density!r}"
        )
    if preset.galaxy.population == "counts":
        from blendflag.simulate.population import galaxy_density

        counts = preset.galaxy.counts
        factor = float(density) / galaxy_density(counts)
        pivot_mag, pivot_n = counts.counts_pivot
        counts = replace(counts, counts_pivot=(pivot_mag, pivot_n * factor))
        return replace(preset, galaxy=replace(preset.galaxy, counts=counts))
    return replace(preset, field=replace(preset.field, density=float(density)))


def simulated_inputs(
    dataset=DEFAULT_DATASET,
    n_galaxies=None,
    shear=DEFAULT_SHEAR,
    seed=DEFAULT_SEED,
    noise=None,
    workers=None,
    progress=False,
    stamp_size=51,
    density=None,
    shear_pairs=True,
    n_stars=None,
) -> list[FieldInput]:
    """Simulated fields with 90-degree rotated pairs: +g and, by default, its -g twin.

    The -g field has the same seed, so the same galaxies (positions sheared
    about their group's centre, so an isolated galaxy sits on the same pixels)
    and the same pixel noise. Galaxy centres stay half a stamp
    (``stamp_size // 2 + 1`` pixels) inside each half, so no stamp reaches into
    the other half. ``n_stars`` stars are drawn too (the same in both:
    stars are not lensed; rows ``STAR`` of the truth, no rotated partner;
    None: the preset's star counts). ``n_galaxies`` and ``noise`` None take
    :func:`default_n_galaxies` and :func:`default_noise`.
    """
    from blendflag.simulate.field import parse_shear

    g1, g2 = parse_shear(shear)
    preset = simulated_preset(dataset, density)
    n_galaxies = default_n_galaxies(preset) if n_galaxies is None else n_galaxies
    noise = default_noise(preset) if noise is None else noise
    signs = (1, -1) if shear_pairs else (1,)
    return [
        simulated_input(
            preset,
            n_galaxies,
            (sign * g1, sign * g2),
            seed,
            noise,
            workers,
            progress,
            stamp_size,
            sign=sign,
            n_stars=n_stars,
        )
        for sign in signs
    ]


def simulated_input(
    dataset=DEFAULT_DATASET,
    n_galaxies=None,
    shear=DEFAULT_SHEAR,
    seed=DEFAULT_SEED,
    noise=None,
    workers=None,
    progress=False,
    stamp_size=51,
    sign=1,
    n_stars=None,
):
    """One simulated field with 90-degree rotated pairs, as :class:`FieldInput`.

    ``dataset`` is a preset name, path or :class:`DatasetConfig` (see
    :func:`simulated_preset`); ``sign`` labels the field's place in a ±g pair;
    ``n_stars`` stars are drawn with the PSF (:mod:`blendflag.simulate.field_stars`;
    None: the preset's star counts).
    """
    from blendflag.simulate.field import simulate_field
    from blendflag.simulate.galaxies import label_reference_noise
    from blendflag.simulate.presets import load_dataset

    preset = load_dataset(dataset)
    n_galaxies = default_n_galaxies(preset) if n_galaxies is None else n_galaxies
    noise = default_noise(preset) if noise is None else noise
    fld = simulate_field(
        preset,
        n_galaxies=n_galaxies,
        shear=shear,
        seed=seed,
        rotated_pairs=True,
        noise=noise,
        workers=workers,
        progress=progress,
        margin=int(stamp_size) // 2 + 1,
        n_stars=n_stars,
    )
    reference = label_reference_noise(preset) or fld.noise_sigma or preset.default_noise
    n_star_rows = int(np.sum(fld.truth["STAR"])) if "STAR" in fld.truth.colnames else 0
    return FieldInput(
        image=fld.image,
        weight=fld.weight,
        psf=fld.psf,
        header=None,
        pixel_scale=fld.pixel_scale,
        true_shear=tuple(fld.shear),
        truth=fld.truth,
        noise_sigma=fld.noise_sigma,
        reference_noise=reference,
        sign=int(sign),
        field=f"{fld.dataset}:{fld.seed}:{len(fld.truth) - n_star_rows}",  # as read_field_info
        description={
            "dataset": fld.dataset,
            "n_galaxies": len(fld.truth) - n_star_rows,
            "density": drawn_density(preset),
            "shear": list(fld.shear),
            "seed": seed,
            "noise_sigma": fld.noise_sigma,
            "reference_noise": reference,
            "rotated_pairs": True,
            "margin": int(stamp_size) // 2 + 1,
            "image_size": list(fld.image.shape[::-1]),
            **({"n_stars": n_star_rows} if n_star_rows else {}),
        },
    )


def drawn_density(preset) -> float:
    """Galaxies drawn per arcmin^2: the counts' integral, or the preset's ``field.density``."""
    if preset.galaxy.population == "counts":
        from blendflag.simulate.population import galaxy_density

        return round(galaxy_density(preset.galaxy.counts), 2)
    return preset.field.density


def file_input(
    image,
    psf,
    catalogue=None,
    weight=None,
    pixel_scale=None,
    recentre_psf: bool = False,
    true_shear=None,
    flag_map=None,
):
    """The user's image, PSF, optional catalogue, weight and flag map, as :class:`FieldInput`.

    The pixel scale is ``pixel_scale``, else ``sqrt(|det J|)`` of the image
    WCS's local Jacobian at the median object position (or the centre;
    :mod:`blendflag.psf.wcs_jacobian`), else the header's CD/CDELT/PIXSCALE.
    Shears are measured in the image frame (pixel x, y axes);
    ``description["wcs"]`` gives that Jacobian's scale, rotation, skew and
    parity, and :func:`blendflag.psf.wcs_jacobian.image_to_sky_shear` turns a
    result into the sky frame.

    Parameters
    ----------
    image, psf, catalogue, weight : path-like or None
        FITS files; ``catalogue`` and ``weight`` are optional.
    pixel_scale : float or None
        Arcsec per pixel when the headers hold none.
    recentre_psf : bool
        Pad and shift a PSF that is even-sized or off-centre instead of
        refusing it (:func:`blendflag.psf.checks.check_psf_image`). [default: False]
    true_shear : (float, float) or None
        The shear applied to a simulated image (``compare --true-shear``): m
        and c are then reported.
    flag_map : path-like or None
        Integer flag map; a non-zero pixel gets weight 0.

    Raises
    ------
    CatalogueError
        Unreadable files, a catalogue without positions or positions outside
        the image, a PSF that fails :func:`~blendflag.psf.checks.check_psf_image`.
    """
    from pathlib import Path

    from blendflag.io.catalog import read_catalogue
    from blendflag.io.images import image_identity, load_image_and_weight, pixel_scale_from_header
    from blendflag.io.stamps import check_positions
    from blendflag.psf.model import psf_image_and_model
    from blendflag.simulate.field_io import field_key

    img, wgt, header = load_image_and_weight(image, weight, flag_map)
    # one checked PSF image; a PSFEx model's image at the centre stands for it where
    # one PSF is used, the model itself is evaluated at every object
    psf_img, model, psf_header = psf_image_and_model(psf, img.shape, recentre=recentre_psf)
    cat = None
    if catalogue is not None:
        cat = read_catalogue(catalogue)
        for col in ("X_IMAGE", "Y_IMAGE"):
            if col not in cat.colnames:
                raise CatalogueError(
                    f"{Path(catalogue).name} has no {col} column: compare needs source positions"
                )
        x, y = cat.positions()
        check_positions(x, y, img.shape)
    wcs_info = _wcs_description(header, cat, img.shape)
    scale = (
        pixel_scale
        or (wcs_info or {}).get("pixel_scale_arcsec")
        or pixel_scale_from_header(header)
        or pixel_scale_from_header(psf_header)
    )
    if scale is None:
        raise CatalogueError(
            "no pixel scale in the image header (CD/CDELT/PIXSCALE): give --pixel-scale"
        )
    return FieldInput(
        image=img,
        weight=wgt,
        psf=psf_img,
        header=header,
        pixel_scale=scale,
        catalogue=cat,
        object_keys=None if cat is None else np.arange(len(cat), dtype=np.int64),
        field=field_key(header, image_identity(image)),  # its correction fields' seed
        true_shear=None if true_shear is None else tuple(float(g) for g in true_shear),
        psf_model=model,
        description={
            "image": str(image),
            "psf": str(psf),
            "psf_model": None if model is None else model.description,
            "catalogue": str(catalogue) if catalogue else None,
            "weight": str(weight) if weight else None,
            "flag_map": str(flag_map) if flag_map else None,
            "shear_frame": "image (pixel x, y axes)",
            "wcs": wcs_info,
        },
    )


def _wcs_description(header, catalogue, shape) -> dict | None:
    """:func:`blendflag.psf.wcs_jacobian.jacobian_summary` at the median object (or the centre)."""
    from blendflag.psf.wcs_jacobian import celestial_wcs, jacobian_summary, local_jacobians

    wcs = celestial_wcs(header)
    if wcs is None:
        return None
    if catalogue is not None and len(catalogue):
        x, y = (float(np.median(v)) for v in catalogue.positions())
    else:
        x, y = (shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0
    try:
        jac = local_jacobians(wcs, x, y)[0]
    except (ValueError, ArithmeticError):
        return None
    if not np.all(np.isfinite(jac)):
        return None
    return dict(jacobian_summary(jac), at_pixel=[x, y])
