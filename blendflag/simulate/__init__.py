"""GalSim simulations: labelled postage stamps, and fields with a known shear.

Import from the module that holds what you need; this package re-exports nothing.

Modules, each importing only those above it (no circles):

``presets``
    Dataset presets (``configs/cfis_survey.yaml``, ..., ``great3_study.yaml`` or
    a YAML file of your own): :class:`~blendflag.simulate.presets.DatasetConfig`
    and its sections, :func:`~blendflag.simulate.presets.load_dataset`,
    :func:`~blendflag.simulate.presets.dataset_preset_names`.
``galaxies``
    The primitives: galaxy parameters (``sample_galaxy``), GalSim galaxies
    (``galaxy_object``), the PSF (``make_psf``, ``psf_image``), and the
    isophote that defines footprints and blend labels (``isophote_level``,
    ``label_reference_noise``).
``stamp_maker``
    One labelled stamp: the blend criterion, the placement of companions
    (``StampMaker``), and redrawing a stamp's sources from its truth row
    (``render_components``).
``stamps``
    Labelled stamp sets: ``simulate_stamps`` (kinds, noise levels, seeds,
    worker processes, the truth table), ``kind_counts``, ``read_stamps`` and
    ``bench_simulation``.
``field_geometry``
    Field size, sheared galaxy positions, footprint overlaps.
``field_layout``
    Where a field's galaxies go: parameters, positions, rotated pairs
    (``lay_out_galaxies``).
``field_image``
    A field's pixels: galaxies pasted in order, noise and weight
    (``draw_galaxies``, ``add_noise``).
``field_truth``
    A field's truth table and blend overlaps (``galaxy_truth``, ``blend_overlaps``).
``field``
    Fields with a known shear: ``Field``, ``simulate_field``, ``parse_shear``.
``field_io``
    ``write_field`` and ``check_field_outdir``.

GalSim and astropy are imported inside the functions that use them, never at
import time.
"""
