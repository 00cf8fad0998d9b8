"""Hook specifications of blendflag: markers and specs, nothing else.

Every hook name starts with ``blendflag_``. A plugin is a module (or object)
with functions of these names decorated with :data:`hookimpl`; it is found
through the ``blendflag`` entry-point group, exactly like the built-in plugins.
"""

import pluggy

hookspec = pluggy.HookspecMarker("blendflag")
hookimpl = pluggy.HookimplMarker("blendflag")


# ---------------------------------------------------------------------------
# Pipeline construction
# ---------------------------------------------------------------------------


@hookspec
def blendflag_pipeline_stages(stages):
    """Add, remove or reorder the named stages of the catalogue pipeline.

    Parameters
    ----------
    stages : blendflag.pipeline.stages.Stages
        The ordered, mutable list of :class:`blendflag.pipeline.stages.Stage`. Edit it
        in place, for example ``stages.insert_after("cutout", Stage(...))``.

    Returns
    -------
    None
        Every implementation is called, in plugin order, on the same list;
        return values are ignored.
    """


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def blendflag_detect(image, weight, config):
    """Detect sources on an image.

    Parameters
    ----------
    image : numpy.ndarray
        2-d image, background not subtracted, in ADU.
    weight : numpy.ndarray or None
        Inverse-variance weight map of the same shape (1/ADU^2); pixels with
        weight 0 are masked.
    config : blendflag.config.DetectConfig
        Thresholds and deblending settings; ``config.backend`` names the
        detector that should answer (one of the names registered with
        :func:`blendflag_register_detectors`).

    Returns
    -------
    astropy.table.Table or None
        A SExtractor-style catalogue with at least NUMBER, X_IMAGE, Y_IMAGE
        (1-based pixels), FLUX_AUTO (ADU), FLAGS (SExtractor bits; value 2 =
        deblended), A_IMAGE, B_IMAGE (pixels), THETA_IMAGE (degrees). Return
        None to let another detector answer. Stops at first non-None result.

        Optionally ``table.meta["segmentation"]``: the segmentation map, an
        integer array of the image's shape holding 0 for sky and, on every
        pixel of an object's footprint, that object's NUMBER. The pipeline's
        ``detect`` stage pops it into ``context.segmentation`` before anything
        copies or writes the table
        (:func:`blendflag.flagging.detectors.pop_segmentation`); neighbour masking
        (``shear.neighbours: mask``) needs it.
    """


# ---------------------------------------------------------------------------
# Registries of classes
# ---------------------------------------------------------------------------


@hookspec
def blendflag_register_flaggers():
    """Register blend flaggers.

    Returns
    -------
    list of type
        Flagger classes, subclasses of :class:`blendflag.flagging.flaggers.Flagger`,
        each with a unique ``name``. The lists of all plugins are concatenated;
        a name registered twice is an error.
    """


@hookspec
def blendflag_register_detectors():
    """Register detector backends (the names ``blendflag_detect`` answers for).

    Returns
    -------
    list of type
        Detector classes, subclasses of :class:`blendflag.flagging.detectors.Detector`,
        each with a unique ``name``: the ``detect.backend`` value for which the
        same plugin's :func:`blendflag_detect` answers. They are the choices of
        every ``--backend`` option. The lists of all plugins are concatenated;
        a name registered twice is an error.
    """


@hookspec
def blendflag_register_shear_engines():
    """Register shear-measurement engines (metacalibration on GalSim, ngmix, ...).

    Returns
    -------
    list of type
        Engine classes, subclasses of :class:`blendflag.shear.ShearEngine`,
        each with a unique ``name``. The lists of all plugins are concatenated.
    """


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


@hookspec
def blendflag_annotate_catalogue(table, context):
    """Add columns or header cards to the output catalogue.

    Parameters
    ----------
    table : astropy.table.Table
        The objects table as it will be written (read it, do not modify it).
    context : blendflag.pipeline.stages.Context
        Everything the pipeline knows: image, catalogue, stamps, results.

    Returns
    -------
    blendflag.io.catalog.Annotation or None
        New columns (one value per row of ``table``) and header cards. The
        annotations of all plugins are merged; two plugins writing the same
        column is an error.
    """


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


@hookspec
def blendflag_register_commands(cli):
    """Add sub-commands to ``blendflag-shear``.

    Parameters
    ----------
    cli : blendflag.cli.CommandRegistry
        Call ``cli.add_command(name, help=..., func=...)``; it returns the
        :class:`argparse.ArgumentParser` of the new command to add options to.
        ``func(args, pm)`` runs the command and returns the exit code.
        ``cli.pm`` is the plugin manager (to offer registered names as choices).

    Returns
    -------
    None
        Every implementation is called, the built-in commands' first (they
        register through this hook too); ``--help`` lists commands in that
        order. Return values are ignored.
    """
