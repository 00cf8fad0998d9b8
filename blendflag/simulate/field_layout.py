"""Layout of a simulated field's galaxies: their parameters and their positions.

Galaxies are drawn from the preset's population and placed uniformly at
random in a square scene; with rotated pairs the scene is repeated, turned by
90 degrees, in a second square to its right. Positions are then sheared about
the centre of each group of neighbours
(:func:`blendflag.simulate.field_geometry.shear_positions`). Used by
:func:`blendflag.simulate.field.simulate_field`; positions are 1-based image
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blendflag.simulate.field_geometry import (
    attach_to_groups,
    friends_of_friends,
    shear_positions,
)
from blendflag.simulate.population import draw_galaxy_params, uses_counts
from blendflag.simulate.presets import DatasetConfig


@dataclass
class GalaxyLayout:
    """The galaxies of a field: what they look like and where they are.

    Attributes
    ----------
    params : list of dict
        Parameters of the preset's population, one per galaxy
        (:func:`~blendflag.simulate.population.draw_galaxy_params`; with
        rotated pairs the left half's, then their rotated twins', which with
        the ``counts`` population carry ``rot90``).
    xs, ys : numpy.ndarray
        float64 positions after the shear of positions, 1-based pixels.
    rotated : numpy.ndarray
        bool, True for the right half's rotated twins.
    pair_id : numpy.ndarray
        int32, the pair a galaxy belongs to (-1 without rotated pairs).
    side : int
        Side of one square scene (the whole image without pairs), pixels.
    n_drawn : int
        Galaxies drawn at random: all of them, or one half with rotated pairs.
    rotated_pairs : bool
        The image is two squares side by side, the right one the left rotated.
    uniform_shear : bool
        Every position was sheared about its scene's centre
        (:func:`uniform_shear`): the pixel noise is to follow the scene.
    """

    params: list
    xs: np.ndarray
    ys: np.ndarray
    rotated: np.ndarray
    pair_id: np.ndarray
    side: int
    n_drawn: int
    rotated_pairs: bool
    uniform_shear: bool = False

    def columns_of(self, index: int, nx: int) -> tuple[int, int]:
        """First and last image column (1-based pixels) the light of galaxy ``index`` may reach.

        Each half of a rotated-pair image is its own scene: light is clipped
        at its edges, so the right half stays an exact 90-degree turn of the
        left. ``nx`` is the image's width in pixels.
        """
        if not self.rotated_pairs:
            return 1, nx
        return (1, self.side) if index < self.n_drawn else (self.side + 1, nx)


def _rotated_twins(params: list, xs: np.ndarray, ys: np.ndarray, side: int):
    """The scene followed by its copy turned by 90 degrees into the square to its right.

    The turn is about the scene's centre (a pixel corner or centre, so the
    pixel grid maps onto itself): shapes ``(e1, e2) -> (-e1, -e2)``, and blends
    rotate with their galaxies, so blended shapes cancel too.

    Parameters
    ----------
    params : list of dict
        Galaxy parameters of the left scene.
    xs, ys : numpy.ndarray
        Positions in the left scene, 1-based pixels.
    side : int
        Side of the scene, pixels.

    Returns
    -------
    params, xs, ys
        Both scenes' parameters and positions (pixels), left then right.
    """
    centre = (side + 1) / 2.0
    params = params + [dict(p, g1=-p["g1"], g2=-p["g2"]) for p in params]
    xs, ys = (
        np.concatenate([xs, side + centre - (ys - centre)]),
        np.concatenate([ys, centre + (xs - centre)]),
    )
    return params, xs, ys


#: Galaxies of a ``counts`` population fainter than ``depth`` plus this (mag)
#: join the shear group of their nearest brighter neighbour instead of linking
#: groups themselves: at a survey's faint densities (~200 per arcmin^2)
#: friends-of-friends percolates into groups hundreds of pixels across, whose
#: members move by pixels between the +g and -g images and no longer sit on
#: the same noise.
GROUP_BELOW_DEPTH = 0.0
#: Linking length (pixels) of those groups when a preset asks for groups
#: (``galaxy.counts.shear_group_link: 15``, the value before uniform shear became
#: the default): galaxies further apart hardly share the measurement weight
#: (1.2" FWHM, 2.7 px sigma at 0.187"/px) and are left unmoved.
COUNTS_GROUP_LINK = 15.0


def _shear_groups(config, params: list, xs, ys, rotated) -> np.ndarray:
    """The groups whose positions are sheared together (:func:`shear_positions`).

    Log-uniform presets: friends-of-friends of every galaxy. ``counts``:
    friends-of-friends of the galaxies down to ``depth + GROUP_BELOW_DEPTH``,
    each fainter galaxy joining its nearest such neighbour's group within the
    linking length (else alone): every blend with a galaxy that may be
    detected keeps its sheared geometry, and a group is sheared about its
    bright members' centre (a bright galaxy alone among them keeps its pixels).

    Returns
    -------
    groups : numpy.ndarray
        int64 label per galaxy.
    leaders : numpy.ndarray or None
        bool per galaxy: the members a group is centred on (None: all).
    """
    if not uses_counts(config):
        return friends_of_friends(xs, ys, keys=rotated), None
    limit = config.galaxy.counts.depth + GROUP_BELOW_DEPTH
    leaders = np.array([p["mag"] <= limit for p in params], dtype=bool)
    link = config.galaxy.counts.shear_group_link
    groups = friends_of_friends(xs[leaders], ys[leaders], link=link, keys=rotated[leaders])
    return attach_to_groups(xs, ys, leaders, groups, link=link, keys=rotated), leaders


def uniform_shear(config: DatasetConfig) -> bool:
    """True if a field of ``config`` shears every position about its scene's centre.

    ``counts`` presets with ``galaxy.counts.shear_group_link: .inf`` (the
    default): the shear of a lensed sky, whose pixel noise then follows the
    scene (:mod:`blendflag.simulate.scene_noise`). Otherwise positions are
    sheared in groups (:func:`_shear_groups`) on static noise.
    """
    return uses_counts(config) and bool(np.isinf(config.galaxy.counts.shear_group_link))


def _sheared(config, params, xs, ys, rotated, shear, side: int, uniform: bool):
    """Positions sheared about each scene's centre (``uniform``) or about their groups'."""
    if uniform:
        centre = (side + 1) / 2.0  # 1-based centre of a scene; the rotated twins' is side further
        centres = np.array([[centre, centre], [side + centre, centre]])
        return shear_positions(xs, ys, shear, np.asarray(rotated, dtype=np.int64), centres=centres)
    groups, leaders = _shear_groups(config, params, xs, ys, rotated)
    return shear_positions(xs, ys, shear, groups, centred_on=leaders)


def _kept_galaxies(config, params: list):
    """Which galaxies a field draws: None (all) or a bool mask of those not too faint.

    A ``counts`` preset's ``galaxy.counts.drop_fainter_than`` (mag) leaves the
    fainter galaxies out after every galaxy's parameters and (sheared)
    position were drawn, so the others, their positions, pair ids and the
    noise are those of the full field: the paired comparison of
    ``scripts/undetected_galaxies.py``.
    """
    limit = config.galaxy.counts.drop_fainter_than if uses_counts(config) else None
    if limit is None:
        return None
    return np.array([p["mag"] <= limit for p in params], dtype=bool)


#: Random stream of the clustered positions, apart from the field's.
CLUSTER_STREAM = 0x636C7573


def cluster_faint_galaxies(seed: int, config, params: list, xs, ys, bounds):
    """Move a fraction of the faint galaxies next to bright ones (a Neyman-Scott process).

    Each galaxy fainter than the depth is, with probability
    ``galaxy.counts.clustered_fraction``, moved to a galaxy at least as
    bright as the depth (chosen at random) plus a round Gaussian offset of
    ``cluster_scale`` arcsec per axis, kept inside ``bounds`` (pixels). The
    magnitudes (so the counts) do not change; only where the faint sit:
    satellites crowd the bright galaxies, as clustered faint galaxies do
    (Euclid Collaboration: Martinet et al. 2019, A&A 627, A59, who find
    that clustering raises the effect of undetected galaxies on m from a few
    1e-3 to about 1e-2). Draws come from ``(seed, CLUSTER_STREAM)``.

    Returns
    -------
    xs, ys : numpy.ndarray
        The positions, pixels (copies).
    """
    counts = config.galaxy.counts
    mags = np.array([p["mag"] for p in params])
    bright = np.flatnonzero(mags <= counts.depth)
    xs, ys = np.array(xs, dtype=float), np.array(ys, dtype=float)
    rng = np.random.default_rng([int(seed), CLUSTER_STREAM])
    moved = (mags > counts.depth) & (rng.uniform(0.0, 1.0, len(mags)) < counts.clustered_fraction)
    if not len(bright) or not moved.any():
        return xs, ys
    host = rng.choice(bright, int(moved.sum()))
    scale = counts.cluster_scale / config.pixel_scale
    offset = rng.normal(0.0, scale, (int(moved.sum()), 2))
    xs[moved] = np.clip(xs[host] + offset[:, 0], *bounds)
    ys[moved] = np.clip(ys[host] + offset[:, 1], *bounds)
    return xs, ys


def lay_out_galaxies(
    rng: np.random.Generator,
    config: DatasetConfig,
    n_drawn: int,
    side: int,
    margin: int,
    rotated_pairs: bool,
    shear: tuple[float, float],
    seed: int = 0,
) -> GalaxyLayout:
    """Draw the galaxies' parameters and positions, repeat them rotated, shear the positions.

    Parameters
    ----------
    rng : numpy.random.Generator
        The field's random stream: the parameters of ``n_drawn`` galaxies are
        drawn first, then their x and their y positions.
    config : DatasetConfig
        The preset (its ``galaxy`` population: ``loguniform`` or ``counts``).
    n_drawn : int
        Galaxies drawn at random (one half of them with rotated pairs).
    side : int
        Side of the square scene, pixels.
    margin : int
        Least distance of a galaxy centre from the scene's edges, pixels.
    rotated_pairs : bool
        Add the scene turned by 90 degrees to the right of it.
    shear : (float, float)
        Reduced shear (g1, g2) the positions are sheared by.
    seed : int
        The field's seed: the stream of the clustered positions
        (:func:`cluster_faint_galaxies`, its own so that toggling clustering
        changes no other number). [default: 0]

    Returns
    -------
    GalaxyLayout
    """
    params = draw_galaxy_params(rng, n_drawn, config)
    xs = rng.uniform(margin + 0.5, side - margin + 0.5, n_drawn)
    ys = rng.uniform(margin + 0.5, side - margin + 0.5, n_drawn)
    if uses_counts(config) and config.galaxy.counts.clustered_fraction > 0:
        bounds = (margin + 0.5, side - margin + 0.5)
        xs, ys = cluster_faint_galaxies(seed, config, params, xs, ys, bounds)
    n = 2 * n_drawn if rotated_pairs else n_drawn
    rotated = np.zeros(n, dtype=bool)
    pair_id = np.full(n, -1, dtype=np.int32)
    if rotated_pairs:
        params, xs, ys = _rotated_twins(params, xs, ys, side)
        if uses_counts(config):  # knots are not round: the twin's profile is turned
            for p in params[n_drawn:]:
                p["rot90"] = True
        rotated[n_drawn:] = True
        pair_id[:] = np.tile(np.arange(n_drawn, dtype=np.int32), 2)
    uniform = uniform_shear(config)
    xs, ys = _sheared(config, params, xs, ys, rotated, shear, side, uniform)
    keep = _kept_galaxies(config, params)
    if keep is not None:
        params = [p for p, k in zip(params, keep, strict=True) if k]
        xs, ys, rotated, pair_id = xs[keep], ys[keep], rotated[keep], pair_id[keep]
        n_drawn = int(keep[:n_drawn].sum())
    return GalaxyLayout(params, xs, ys, rotated, pair_id, side, n_drawn, rotated_pairs, uniform)
