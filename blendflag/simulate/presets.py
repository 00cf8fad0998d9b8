"""Dataset presets: the instrument, galaxy population, noise, stamps and fields of a simulation.

A preset is a YAML file: a survey's sky from number counts
(``configs/cfis_survey.yaml``, ``euclid_survey.yaml``, ``lsst_y10.yaml``,
``des_y5.yaml``), the original study's stamps and fields
(``great3_study.yaml``, ``cfis_study.yaml``, ``euclid_study.yaml``, also
known by their old names ``great3``, ``cfis`` and ``euclid``), or the user's own,
loaded into a :class:`DatasetConfig` and validated once; the
sections ``psf``, ``galaxy``, ``blend`` and ``field`` are :class:`PSFSpec`,
:class:`GalaxySpec`, :class:`BlendSpec` and :class:`FieldSpec`. Sizes are in
arcsec unless said otherwise, fluxes and noise in ADU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from blendflag.config import check, configs_dir, from_mapping, load_yaml
from blendflag.errors import ConfigError

#: PSF profiles (``psf.type``).
PSF_TYPES = ("moffat", "airy", "gaussian")
#: Galaxy profiles (``galaxy.profile``).
GALAXY_PROFILES = ("exponential", "sersic", "bulge_disk")
#: Galaxy populations (``galaxy.population``): today's log-uniform draw, or
#: number counts in a survey's band (:mod:`blendflag.simulate.population`).
POPULATIONS = ("loguniform", "counts")


def _check_range(pair, where: str, low: float = 0.0) -> None:
    check(
        pair[0] > low and pair[1] >= pair[0],
        where,
        f"expected [min, max] with {low} < min <= max, got {list(pair)}",
    )


@dataclass
class PSFSpec:
    """The point-spread function of a dataset.

    Attributes
    ----------
    type : str
        ``"moffat"``, ``"airy"`` or ``"gaussian"``. [default: "moffat"]
    fwhm : float
        Full width at half maximum, in arcsec (Moffat and Gaussian). [default: 0.65]
    beta : float
        Moffat index. [default: 2.5]
    lam_over_diam : float
        Airy lambda / D, in arcsec; FWHM ~= 1.03 lam_over_diam unobscured. [default: 0.165]
    obscuration : float
        Airy central obscuration, as a fraction of the diameter. [default: 0.0]
    g1, g2 : float
        PSF shape as a reduced shear (constant over the field). [default: 0.0]
    image_size : int
        Side of the PSF image written beside fields, in pixels (odd). [default: 51]
    """

    type: str = "moffat"
    fwhm: float = 0.65
    beta: float = 2.5
    lam_over_diam: float = 0.165
    obscuration: float = 0.0
    g1: float = 0.0
    g2: float = 0.0
    image_size: int = 51

    def validate(self, where: str) -> None:
        check(
            self.type in PSF_TYPES,
            f"{where}.type",
            f"unknown PSF type {self.type!r} (allowed: {', '.join(PSF_TYPES)})",
        )
        check(self.fwhm > 0, f"{where}.fwhm", "must be positive (arcsec)")
        check(self.beta > 1.1, f"{where}.beta", "must be > 1.1")
        check(self.lam_over_diam > 0, f"{where}.lam_over_diam", "must be positive (arcsec)")
        check(0 <= self.obscuration < 1, f"{where}.obscuration", "must be in [0, 1)")
        check(self.g1**2 + self.g2**2 < 0.25, f"{where}.g1/g2", "|g| must be < 0.5")
        check(
            self.image_size >= 9 and self.image_size % 2 == 1,
            f"{where}.image_size",
            "must be an odd number of pixels >= 9",
        )


def _check_pair(pair, where: str, low: float, high: float, what: str) -> None:
    check(
        pair is None or (low <= pair[0] <= pair[1] <= high),
        where,
        f"expected [min, max] with {low} <= min <= max <= {high} ({what}), got {pair}",
    )


@dataclass
class CountsSpec:
    """The ``counts`` galaxy population (``galaxy.counts``): a survey's sky, galaxy by galaxy.

    Every magnitude is an AB magnitude in the survey's band (``filter``). See
    :mod:`blendflag.simulate.population` for the model and
    ``configs/cfis_survey.yaml`` for the sources of each number. Keys without
    a default are required.

    Attributes
    ----------
    survey, filter : str
        A ``surveycodex`` survey and one of its filters (``CFHTLS``, ``r``):
        zero point, sky brightness, gain, pixel scale, exposure time.
    exposure_time : float or None
        Exposure time, s; None takes surveycodex's ``full_exposure_time``. [default: None]
    depth : float
        The survey's 5-sigma point-source depth, mag.
    faint_below_depth : float
        Galaxies are drawn down to ``depth + faint_below_depth``, mag. [default: 2.5]
    faint_min : float
        ... and at least down to this magnitude. [default: 27.0]
    bright_mag : float
        Brightest galaxy drawn, mag.
    counts_pivot : [float, float]
        A point of the differential counts: magnitude and galaxies per arcmin^2 per mag.
    counts_breaks : list of float
        Magnitudes where the counts' slope changes (increasing; may be empty).
    counts_slopes : list of float
        d log10 N / dm on each side of the breaks, brightest first
        (``len(counts_breaks) + 1`` positive numbers).
    size_relation : [float, float, float]
        Median exponential-disk scale length: ``ln(r_d / arcsec) = a + b (m - m0)``
        as ``[a, b, m0]``; the disk's half-light radius is 1.678 r_d.
    size_scatter : float
        Standard deviation of ln(half-light radius) at fixed magnitude.
    size_clip : float
        The scatter is truncated at this many standard deviations.
    ellipticity_disc : [float, float, float]
        ``[e_max, e_0, a]`` of the disk ellipticity distribution
        ``p(e) ~ e (1 - exp((e - e_max) / a)) / ((1 + e) sqrt(e^2 + e_0^2))``.
    ellipticity_bulge : [float, float]
        ``[b, c]`` of the bulge ellipticity distribution ``p(e) ~ e exp(-b e - c e^2)``.
    bulge_dominated : float
        Fraction of pure-bulge galaxies (bulge-to-total 1).
    bulge_sigma : float
        Other galaxies' bulge-to-total is ``|N(0, bulge_sigma)|`` (redrawn above 1).
    bulge_size_ratio : float
        Bulge half-light radius over the disk's.
    knot_galaxies : float
        Fraction of galaxies (with a disk) given star-forming knots.
    knot_flux : [float, float]
        Fraction of the disk's light in the knots, drawn uniformly.
    knot_number : [int, int]
        Number of knots, drawn uniformly (both ends included).
    smooth_below_depth : float
        Galaxies fainter than ``depth + smooth_below_depth`` are drawn without
        knots (their knots' share of the light stays in the smooth disk): a
        drawing shortcut, 4x faster for the faint majority; the random draws
        do not change, so a large value (99) turns it off and gives the same
        galaxies otherwise. [default: 0.5]
    star_density : float
        Stars per arcmin^2 between ``star_mags``, drawn with the PSF into
        every field (0: none). [default: 0.0]
    star_mags : [float, float]
        Brightest and faintest star, mag. [default: [17.0, 24.0]]
    star_slope : float
        d log10 N / dm of the star counts over ``star_mags``. [default: 0.1]
    clustered_fraction : float
        Fraction of the galaxies fainter than ``depth`` placed around
        brighter ones instead of uniformly (a Neyman-Scott process,
        :func:`blendflag.simulate.field_layout.cluster_faint_galaxies`; 0:
        unclustered). [default: 0.0]
    cluster_scale : float
        Gaussian offset of a clustered galaxy from its host, per axis,
        arcsec. [default: 2.0]
    drop_fainter_than : float or None
        Leave the galaxies fainter than this (mag) out of the image, after
        all were drawn: the same brighter galaxies, pair ids and noise as the
        full field (for measuring what the faint ones do). [default: None]
    shear_group_link : float
        How a ±g field shears positions. ``.inf``: every position about its
        scene's centre, as lensing does, with the pixel noise permuted to
        follow the scene (:mod:`blendflag.simulate.scene_noise`) so that it
        still cancels between +g and -g. A finite length (pixels) shears
        groups instead, on static noise: the galaxies down to ``depth`` are
        linked friends-of-friends, each fainter one joins its nearest such
        galaxy's group within the same length, and a group is sheared about
        its bright members' centre; neighbours in different groups then keep
        unsheared separations, which biases per-object m upward on deep,
        crowded skies (docs/literature_check_uniform_shear.md). [default: inf]
    """

    survey: str | None = None
    filter: str | None = None
    exposure_time: float | None = None
    depth: float | None = None
    faint_below_depth: float = 2.5
    faint_min: float = 27.0
    bright_mag: float | None = None
    counts_pivot: tuple[float, float] | None = None
    counts_breaks: list[float] = field(default_factory=list)
    counts_slopes: list[float] | None = None
    size_relation: tuple[float, float, float] | None = None
    size_scatter: float | None = None
    size_clip: float | None = None
    ellipticity_disc: tuple[float, float, float] | None = None
    ellipticity_bulge: tuple[float, float] | None = None
    bulge_dominated: float | None = None
    bulge_sigma: float | None = None
    bulge_size_ratio: float | None = None
    knot_galaxies: float | None = None
    knot_flux: tuple[float, float] | None = None
    knot_number: tuple[int, int] | None = None
    smooth_below_depth: float = 0.5
    star_density: float = 0.0
    star_mags: tuple[float, float] = (17.0, 24.0)
    star_slope: float = 0.1
    clustered_fraction: float = 0.0
    cluster_scale: float = 2.0
    drop_fainter_than: float | None = None
    shear_group_link: float = math.inf

    #: Keys a preset must give (no default).
    REQUIRED = (
        "survey",
        "filter",
        "depth",
        "bright_mag",
        "counts_pivot",
        "counts_slopes",
        "size_relation",
        "size_scatter",
        "size_clip",
        "ellipticity_disc",
        "ellipticity_bulge",
        "bulge_dominated",
        "bulge_sigma",
        "bulge_size_ratio",
        "knot_galaxies",
        "knot_flux",
        "knot_number",
    )

    @property
    def faint_mag(self) -> float:
        """Faintest galaxy drawn: ``max(depth + faint_below_depth, faint_min)``, mag."""
        return max(self.depth + self.faint_below_depth, self.faint_min)

    def validate(self, where: str) -> None:
        for name in self.REQUIRED:
            check(getattr(self, name) is not None, f"{where}.{name}", "required")
        self._validate_magnitudes(where)
        self._validate_shapes(where)

    def _validate_magnitudes(self, where: str) -> None:
        """The exposure, depth, magnitude range and counts."""
        check(
            self.exposure_time is None or self.exposure_time > 0,
            f"{where}.exposure_time",
            "must be positive (s)",
        )
        check(10 <= self.depth <= 35, f"{where}.depth", "must be in [10, 35] mag")
        check(self.faint_below_depth >= 0, f"{where}.faint_below_depth", "must be >= 0 mag")
        check(
            self.bright_mag < self.faint_mag,
            f"{where}.bright_mag",
            f"must be brighter than the faint limit {self.faint_mag:g} mag",
        )
        check(self.counts_pivot[1] > 0, f"{where}.counts_pivot", "density must be positive")
        breaks = list(self.counts_breaks)
        check(breaks == sorted(set(breaks)), f"{where}.counts_breaks", "must increase")
        check(
            len(self.counts_slopes) == len(breaks) + 1 and min(self.counts_slopes) > 0,
            f"{where}.counts_slopes",
            f"give {len(breaks) + 1} positive slopes (one more than counts_breaks)",
        )

    def _validate_shapes(self, where: str) -> None:
        """Sizes, ellipticities, bulges and knots."""
        check(0 <= self.size_scatter <= 2, f"{where}.size_scatter", "must be in [0, 2]")
        check(self.size_clip > 0, f"{where}.size_clip", "must be positive (sigmas)")
        e_max, e_0, a = self.ellipticity_disc
        check(
            0 < e_max < 1 and e_0 > 0 and a > 0,
            f"{where}.ellipticity_disc",
            "expected [e_max, e_0, a] with 0 < e_max < 1, e_0 > 0, a > 0",
        )
        check(
            min(self.ellipticity_bulge) >= 0 and max(self.ellipticity_bulge) > 0,
            f"{where}.ellipticity_bulge",
            "expected [b, c] >= 0, not both 0",
        )
        check(0 <= self.bulge_dominated <= 1, f"{where}.bulge_dominated", "must be in [0, 1]")
        check(self.bulge_sigma > 0, f"{where}.bulge_sigma", "must be positive")
        check(self.bulge_size_ratio > 0, f"{where}.bulge_size_ratio", "must be positive")
        check(0 <= self.knot_galaxies <= 1, f"{where}.knot_galaxies", "must be in [0, 1]")
        _check_pair(self.knot_flux, f"{where}.knot_flux", 0.0, 0.9, "fraction of disk light")
        _check_pair(self.knot_number, f"{where}.knot_number", 1, 10000, "knots")
        check(self.smooth_below_depth >= 0, f"{where}.smooth_below_depth", "must be >= 0 mag")
        check(self.star_density >= 0, f"{where}.star_density", "must be >= 0 per arcmin^2")
        _check_pair(self.star_mags, f"{where}.star_mags", 0.0, 40.0, "mag")
        check(self.star_slope > 0, f"{where}.star_slope", "must be positive")
        check(0 <= self.clustered_fraction <= 1, f"{where}.clustered_fraction", "must be in [0, 1]")
        check(self.shear_group_link > 0, f"{where}.shear_group_link", "must be > 0 pixels")
        check(self.cluster_scale > 0, f"{where}.cluster_scale", "must be positive (arcsec)")

    @property
    def smooth_mag(self) -> float:
        """Galaxies fainter than this are drawn without knots, mag."""
        return self.depth + self.smooth_below_depth


@dataclass
class GalaxySpec:
    """The galaxy population of a dataset.

    Attributes
    ----------
    profile : str
        ``"exponential"``, ``"sersic"`` (index drawn from ``sersic_n``) or
        ``"bulge_disk"`` (exponential disk + de Vaucouleurs bulge). [default: "exponential"]
    sersic_n : list of float
        Sersic indices drawn uniformly (a short list keeps GalSim's caches warm). [default: [1.0]]
    bulge_fraction : [float, float]
        Range of the bulge-to-total flux ratio, drawn uniformly (``bulge_disk``).
        [default: [0, 0.5]]
    bulge_size_ratio : float
        Bulge half-light radius over the disk's. [default: 0.5]
    hlr : [float, float]
        Half-light radius range, in arcsec, drawn log-uniformly. [default: [0.3, 0.9]]
    flux : [float, float]
        Total flux range, in ADU, drawn log-uniformly. [default: [3000, 40000]]
    ellipticity_sigma : float
        Standard deviation of each intrinsic reduced-shear component. [default: 0.25]
    ellipticity_max : float
        Intrinsic |g| is redrawn above this. [default: 0.7]
    population : str
        ``"loguniform"``: the keys above (fluxes and sizes log-uniform); or
        ``"counts"``: magnitudes, sizes, shapes, bulges and knots from
        ``counts`` (fields only; stamps always draw ``loguniform``).
        [default: "loguniform"]
    counts : CountsSpec or None
        The ``counts`` population's parameters. [default: None]
    """

    profile: str = "exponential"
    sersic_n: list[float] = field(default_factory=lambda: [1.0])
    bulge_fraction: tuple[float, float] = (0.0, 0.5)
    bulge_size_ratio: float = 0.5
    hlr: tuple[float, float] = (0.3, 0.9)
    flux: tuple[float, float] = (3000.0, 40000.0)
    ellipticity_sigma: float = 0.25
    ellipticity_max: float = 0.7
    population: str = "loguniform"
    counts: CountsSpec | None = None

    def validate(self, where: str) -> None:
        check(
            self.population in POPULATIONS,
            f"{where}.population",
            f"unknown population {self.population!r} (allowed: {', '.join(POPULATIONS)})",
        )
        check(
            self.population != "counts" or self.counts is not None,
            f"{where}.counts",
            "required with population: counts",
        )
        check(
            self.profile in GALAXY_PROFILES,
            f"{where}.profile",
            f"unknown profile {self.profile!r} (allowed: {', '.join(GALAXY_PROFILES)})",
        )
        check(
            len(self.sersic_n) > 0 and all(0.3 <= n <= 6.2 for n in self.sersic_n),
            f"{where}.sersic_n",
            "give one or more indices in [0.3, 6.2]",
        )
        check(
            0 <= self.bulge_fraction[0] <= self.bulge_fraction[1] <= 1,
            f"{where}.bulge_fraction",
            "expected [min, max] within [0, 1]",
        )
        check(self.bulge_size_ratio > 0, f"{where}.bulge_size_ratio", "must be positive")
        _check_range(self.hlr, f"{where}.hlr")
        _check_range(self.flux, f"{where}.flux")
        check(
            0 <= self.ellipticity_sigma <= 0.5, f"{where}.ellipticity_sigma", "must be in [0, 0.5]"
        )
        check(0 < self.ellipticity_max < 1, f"{where}.ellipticity_max", "must be in (0, 1)")


@dataclass
class BlendSpec:
    """How two-galaxy stamps are placed (see :mod:`blendflag.simulate.stamp_maker`).

    Attributes
    ----------
    isophote_nsigma : float
        A source's footprint is the set of stamp pixels where its noiseless
        (PSF-convolved, pixelated) image exceeds this many noise sigmas; two
        sources are blended when their footprints share a pixel. [default: 1.0]
    isophote_reference : str
        Which sigma sets the isophote: ``"default_noise"`` (the preset's
        ``default_noise``, so the label is a property of the pair, the same at
        every noise level) or ``"stamp_noise"`` (each stamp's own sigma, so the
        same pair is a blend at low noise and separated at high noise).
        [default: "default_noise"]
    min_separation : float
        Smallest centre-to-centre distance of a blend, in pixels. [default: 1.0]
    separated_max_factor : float
        Separated companions are drawn at up to this many times the blend
        reach (the sum of the footprints' radii). [default: 3.0]
    edge_margin : int
        A companion's centre stays this many pixels inside the stamp. [default: 4]
    min_snr : float
        Every source's optimal S/N (sqrt(sum I^2) / sigma of its noiseless
        image) is at least this; fainter draws are redrawn, so no stamp holds an
        invisible "blend" companion or an empty "single". [default: 5.0]
    """

    isophote_nsigma: float = 1.0
    isophote_reference: str = "default_noise"
    min_separation: float = 1.0
    separated_max_factor: float = 3.0
    edge_margin: int = 4
    min_snr: float = 5.0

    def validate(self, where: str) -> None:
        check(self.isophote_nsigma > 0, f"{where}.isophote_nsigma", "must be positive")
        check(
            self.isophote_reference in ("default_noise", "stamp_noise"),
            f"{where}.isophote_reference",
            "must be default_noise or stamp_noise",
        )
        check(self.min_separation >= 0, f"{where}.min_separation", "must be >= 0 pixels")
        check(self.separated_max_factor >= 1, f"{where}.separated_max_factor", "must be >= 1")
        check(self.edge_margin >= 0, f"{where}.edge_margin", "must be >= 0 pixels")
        check(0 <= self.min_snr <= 100, f"{where}.min_snr", "must be in [0, 100]")


@dataclass
class FieldSpec:
    """Settings of simulated fields (``simulate-field``).

    Attributes
    ----------
    n_galaxies : int
        Galaxies per field when not given on the command line. [default: 2000]
    size : int
        Side of the (square) field image, in pixels; 0 chooses it from
        ``n_galaxies`` and ``density``. [default: 0]
    density : float
        Galaxies per square arcminute, used when ``size`` is 0. [default: 30]
    margin : int
        Galaxy centres stay this many pixels inside the image. [default: 10]
    """

    n_galaxies: int = 2000
    size: int = 0
    density: float = 30.0
    margin: int = 10

    def validate(self, where: str) -> None:
        check(self.n_galaxies >= 1, f"{where}.n_galaxies", "must be at least 1")
        check(
            self.size == 0 or self.size >= 64,
            f"{where}.size",
            "must be 0 (automatic) or at least 64 pixels",
        )
        check(self.density > 0, f"{where}.density", "must be positive (per arcmin^2)")
        check(self.margin >= 0, f"{where}.margin", "must be >= 0 pixels")


@dataclass
class DatasetConfig:
    """A simulated dataset: instrument, galaxies, noise, stamps and fields.

    Attributes
    ----------
    name : str
        Short name, written into output headers.
    description : str
        One line.
    pixel_scale : float
        Arcsec per pixel.
    stamp_size : int
        Side of the postage stamps, in pixels (odd). [default: 51]
    noise_grid : list of float
        Gaussian noise sigmas, in ADU, drawn uniformly with ``--noise grid``.
    default_noise : float
        Noise sigma used when none is given, in ADU.
    folding_threshold : float
        GalSim GSParams folding_threshold (accuracy of FFT drawing). [default: 0.005]
    psf, galaxy, blend, field
        See :class:`PSFSpec`, :class:`GalaxySpec`, :class:`BlendSpec`, :class:`FieldSpec`.
    """

    name: str = "custom"
    description: str = ""
    pixel_scale: float = 0.187
    stamp_size: int = 51
    noise_grid: list[float] = field(default_factory=lambda: [5.0, 14.0, 18.0, 26.0, 35.0, 40.0])
    default_noise: float = 14.0
    folding_threshold: float = 5e-3
    psf: PSFSpec = field(default_factory=PSFSpec)
    galaxy: GalaxySpec = field(default_factory=GalaxySpec)
    blend: BlendSpec = field(default_factory=BlendSpec)
    field: FieldSpec = field(default_factory=FieldSpec)

    def validate(self, where: str) -> None:
        # Top-level keys are named bare ("pixel_scale"), as in the YAML file.
        where = "" if where == "datasetconfig" else f"{where}."
        check(
            0.01 <= self.pixel_scale <= 2.0,
            f"{where}pixel_scale",
            "must be in [0.01, 2] arcsec per pixel",
        )
        check(
            self.stamp_size >= 15 and self.stamp_size % 2 == 1,
            f"{where}stamp_size",
            "must be an odd number of pixels >= 15",
        )
        check(
            len(self.noise_grid) > 0 and all(s > 0 for s in self.noise_grid),
            f"{where}noise_grid",
            "give one or more positive sigmas (ADU)",
        )
        check(self.default_noise > 0, f"{where}default_noise", "must be positive (ADU)")
        check(
            1e-4 <= self.folding_threshold <= 0.05,
            f"{where}folding_threshold",
            "must be in [1e-4, 0.05]",
        )
        check(
            2 * self.blend.edge_margin < self.stamp_size - 2,
            f"{where}blend.edge_margin",
            "leaves no room in the stamp",
        )
        if self.galaxy.population == "counts":
            self._check_survey(where)

    def _check_survey(self, where: str) -> None:
        """The ``counts`` population's survey and filter exist, at this pixel scale."""
        from blendflag.simulate.survey_photometry import survey_problem

        problem = survey_problem(self.galaxy.counts, self.pixel_scale)
        if problem is not None:
            key, message = problem
            key = "pixel_scale" if key == "pixel_scale" else f"galaxy.counts.{key}"
            check(False, f"{where}{key}", message)


def _preset_files() -> dict:
    """``{name: path}`` of the packaged dataset presets (see :func:`dataset_preset_names`)."""
    keys = {f.name for f in dataclasses.fields(DatasetConfig)}
    found = {}
    for path in configs_dir().glob("*.yaml"):
        try:
            data = load_yaml(path)
        except ConfigError:
            continue
        if "pixel_scale" in data and set(data) <= keys:
            found[path.stem] = path
    return found


def with_counts(config: DatasetConfig, **changes) -> DatasetConfig:
    """``config`` with ``galaxy.counts`` settings changed (e.g. ``drop_fainter_than=25.0``).

    Raises
    ------
    ConfigError
        A preset without a ``counts`` population, or an unknown or invalid setting.
    """
    counts = config.galaxy.counts
    if config.galaxy.population != "counts" or counts is None:
        raise ConfigError(f"{config.name}: no galaxy.counts (galaxy.population is not counts)")
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(counts)})
    if unknown:
        raise ConfigError(f"galaxy.counts has no setting {unknown[0]!r}")
    changed = dataclasses.replace(counts, **changes)
    changed.validate("galaxy.counts")
    return dataclasses.replace(config, galaxy=dataclasses.replace(config.galaxy, counts=changed))


#: The original study's presets by their old names (they keep their behaviour:
#: ``simulate --dataset cfis`` draws what it always drew).
STUDY_ALIASES = {"great3": "great3_study", "cfis": "cfis_study", "euclid": "euclid_study"}


def dataset_preset_names() -> list[str]:
    """Names of the packaged dataset presets, sorted.

    A YAML file in ``configs/`` (installed as ``blendflag.configs``) is a preset
    when its top-level mapping holds ``pixel_scale`` and only keys of
    :class:`DatasetConfig`; other packaged files (the pipeline defaults, say)
    are not.
    """
    return sorted(_preset_files())


def load_dataset(dataset) -> DatasetConfig:
    """A dataset preset by name (``"cfis_survey"``, ``"cfis_study"`` alias ``"cfis"``...) or path.

    Parameters
    ----------
    dataset : str, path-like or DatasetConfig
        A packaged preset name, a path to a YAML file with the same keys as
        ``configs/cfis_study.yaml``, or an already loaded config (returned as is).

    Raises
    ------
    ConfigError
        Unknown name, missing or invalid file, or invalid values.
    """
    if isinstance(dataset, DatasetConfig):
        return dataset
    text = STUDY_ALIASES.get(str(dataset), str(dataset))
    presets = _preset_files()
    names = sorted(presets)
    if text in presets:
        path = presets[text]
    elif text.endswith((".yaml", ".yml")) or Path(text).is_file():
        path = Path(text)
    else:
        raise ConfigError(
            f"unknown dataset {text!r} (choose from {', '.join(names)}, or give a YAML file)"
        )
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    try:
        return from_mapping(DatasetConfig, data, "")
    except ConfigError as exc:
        raise ConfigError(f"config error in {path.name}: {exc}") from None
