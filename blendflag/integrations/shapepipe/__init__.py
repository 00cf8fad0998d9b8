"""blendflag as a ShapePipe module: ``blendflag_runner.py``, copied or linked into
``shapepipe/modules/`` (see the README in this folder).

The runner is imported by its own module path (``blendflag_runner``), never from
here, so that importing :mod:`blendflag.integrations.shapepipe` imports nothing heavy.
"""
