"""Packaged YAML configs: dataset presets (great3, euclid, cfis) and the pipeline defaults."""
