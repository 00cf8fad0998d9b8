"""What a plugin adds to an output catalogue: columns and header cards.

Kept apart from :mod:`blendflag.io.catalog` (which needs astropy.io.fits) so that
building the plugin manager stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blendflag.errors import CatalogueError


@dataclass
class Annotation:
    """Columns and header cards a plugin adds to an output catalogue.

    Attributes
    ----------
    columns : dict
        ``{name: numpy.ndarray}``, one value per object row.
    cards : list
        ``(keyword, value, comment)`` tuples for the objects-table header.
    units : dict
        Optional ``{column name: unit string}``.
    """

    columns: dict = field(default_factory=dict)
    cards: list = field(default_factory=list)
    units: dict = field(default_factory=dict)

    def merge(self, other: Annotation | None) -> None:
        """Add ``other``'s columns and cards; a column present in both is an error."""
        if other is None:
            return
        for name in other.columns:
            if name in self.columns:
                raise CatalogueError(f"two plugins write the catalogue column {name}")
        self.columns.update(other.columns)
        self.cards.extend(other.cards)
        self.units.update(other.units)
