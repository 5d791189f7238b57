"""Viewport layouts and the grid cells each one occupies."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Cell:
    """A viewport's place in the layout grid (row, column, spans)."""

    row: int
    column: int
    row_span: int = 1
    column_span: int = 1


class Layout(str, Enum):
    ONE = "1x1"
    ONE_BY_TWO = "1x2"  # one row, two columns (side by side)
    TWO_BY_ONE = "2x1"  # two rows, one column
    TWO_BY_TWO = "2x2"
    ONE_PLUS_THREE = "1+3"  # a large viewport on the left, three stacked on the right
    ONE_BY_THREE = "1x3"  # one row, three columns (MPR: axial | coronal | sagittal)

    @property
    def cells(self) -> tuple[Cell, ...]:
        return _CELLS[self]

    @property
    def viewport_count(self) -> int:
        return len(_CELLS[self])

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of the grid the cells live in."""
        cells = _CELLS[self]
        return (
            max(c.row + c.row_span for c in cells),
            max(c.column + c.column_span for c in cells),
        )


_CELLS: dict[Layout, tuple[Cell, ...]] = {
    Layout.ONE: (Cell(0, 0),),
    Layout.ONE_BY_TWO: (Cell(0, 0), Cell(0, 1)),
    Layout.TWO_BY_ONE: (Cell(0, 0), Cell(1, 0)),
    Layout.TWO_BY_TWO: (Cell(0, 0), Cell(0, 1), Cell(1, 0), Cell(1, 1)),
    Layout.ONE_PLUS_THREE: (Cell(0, 0, row_span=3, column_span=2), Cell(0, 2), Cell(1, 2), Cell(2, 2)),
    Layout.ONE_BY_THREE: (Cell(0, 0), Cell(0, 1), Cell(0, 2)),
}
