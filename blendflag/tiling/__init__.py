"""Tiles as Dask tasks, and one large image as overlapping sub-tiles."""
