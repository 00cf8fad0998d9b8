"""Adapters that run blendflag inside other pipelines (one subpackage per host).

Integrations sit above the library, beside the command layer: they import the
library, and the library never imports them (``tests/test_layers.py``).
"""
