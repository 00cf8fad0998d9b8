"""Metacalibration shear: engines, their results, and the statistics built on them.

========================  ===================================================
module                    what it holds
========================  ===================================================
``results``               the five metacal versions, per-object flag bits, and
                          the two result shapes: :class:`~results.MetacalResult`
                          (one row per input stamp, five shapes each) and
                          :class:`~results.VersionCatalogues` (one catalogue per
                          version, as metadetection makes them)
``engine``                the engine interface: :class:`~engine.ShearEngine`,
                          its two kinds (:class:`~engine.StampShearEngine`,
                          :class:`~engine.ImageShearEngine`) and
                          :func:`~engine.select_engine` (by name or priority)
``inputs``                what an engine needs from a pipeline context: stamp
                          crops, per-object noise, paired noise-correction fields
``driver``                chunked measurement in processes or on Dask
``statistics``            responses, selection sums, bootstrap, m and c
``testdata``              isolated galaxies with a known shear (tests, benchmarks)
``bench``                 throughput of every available engine
========================  ===================================================

Engines are plugins registered through ``blendflag_register_shear_engines``;
nothing here names one. No module imports GalSim or ngmix at import time.
See docs/architecture.md for how a measurement flows through the pipeline.
"""
