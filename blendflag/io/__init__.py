"""Catalogues, images, stamps and their annotation; atomic writes and output paths."""
