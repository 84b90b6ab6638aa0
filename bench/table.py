"""The one table model that report.py renders every table of the results with: rows (a
figure each: its label, format and which way is better) over columns (a server, a revision,
a variant: the figures of each round), each cell the median over the rounds, † where the load
generator was near its limit, ratio columns between two columns, and every round's values."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: A rate or time is marked † when the load generator used this much of its core or more (median).
LOADGEN_LIMIT = 90


@dataclass(frozen=True)
class Row:
    key: str  # the figure in each round's figures
    label: str
    fmt: str | Callable[[Any], str] = "{:.1f}"
    better: str = ""  # "higher" or "lower": it has ratios and is in the rounds table; "" informative
    group: str = ""  # the runs it is read from, and the first column of a grouped table (the workload)
    dagger: str = ""  # the load generator's CPU figure whose median at LOADGEN_LIMIT or more marks it †
    versus: Callable[[float, float], float] | None = None  # derived: f(the median, its column's base's)
    on_base: bool = True  # with versus: shown in the base column itself too


@dataclass(eq=False)
class Column:
    label: str
    runs: dict[str, list[dict[str, Any]]]  # by group (the workload; "" ungrouped), the figures of each round
    base: Column | None = None  # what versus rows compare with (default: itself)

    @classmethod
    def of(cls, label: str, runs: list[dict[str, Any]], base: Column | None = None) -> Column:
        """A column of one list of rounds (an ungrouped table)."""
        return cls(label, {"": runs}, base)

    def value(self, key: str, group: str = "") -> Any:
        """The median of ``key`` over the rounds (the last round's when it is not a number; None without one)."""
        values = [run[key] for run in self.runs.get(group, []) if run.get(key) is not None]
        if not values:
            return None
        return statistics.median(values) if all(isinstance(v, int | float) for v in values) else values[-1]


@dataclass(frozen=True)
class Ratio:
    label: str
    num: Column
    den: Column
    skip: frozenset[str] = frozenset()  # keys of rows this ratio does not compare


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def cell(row: Row, value: Any) -> str:
    if missing(value):
        return "–"
    return row.fmt(value) if callable(row.fmt) else row.fmt.format(value)


def markdown(header: list[str], rows: list[list[str]], align: str = "l") -> str:
    """A markdown table; ``align`` gives each column's alignment (l or r), its last letter the rest's."""
    marks = [{"l": "---", "r": "---:"}[(align + align[-1] * len(header))[n]] for n in range(len(header))]
    return "\n".join("| " + " | ".join(line) + " |" for line in [header, marks, *rows])


def medians(
    rows: list[Row], columns: list[Column], ratios: list[Ratio] = (), grouped: bool = False, note: str = "", keep: bool = False
) -> str:
    """The medians of ``rows`` in ``columns``, then ``ratios``; a row with no value is left out
    (unless ``keep``), and ``note`` follows when a cell is marked †."""
    lines, flagged = [], False
    for row in rows:
        cells = []
        for column in columns:
            base = column.base or column
            value = column.value(row.key, row.group)
            if row.versus:
                other = base.value(row.key, row.group)
                skip = missing(value) or missing(other) or (base is column and not row.on_base)
                value = None if skip else _divided(row.versus, value, other)
            text = cell(row, value)
            if text != "–" and row.dagger and (column.value(row.dagger, row.group) or 0) >= LOADGEN_LIMIT:
                text += " †"
                flagged = True
            cells.append(text)
        if all(text == "–" for text in cells) and not keep:
            continue
        for ratio in ratios:
            a, b = ratio.num.value(row.key, row.group), ratio.den.value(row.key, row.group)
            comparable = row.better and row.key not in ratio.skip and not row.versus and not missing(a) and not missing(b) and b
            cells.append(f"{a / b:.2f}" if comparable else "–")
        lines.append(([row.group] if grouped else []) + [row.label] + cells)
    header = (["workload"] if grouped else []) + ["figure"] + [c.label for c in columns] + [r.label for r in ratios]
    table = markdown(header, lines, "llr" if grouped else "lr")
    return table + (f"\n\n{note}" if flagged and note else "")


def _divided(versus: Callable[[float, float], float], value: float, other: float) -> float | None:
    try:
        return versus(value, other)
    except ZeroDivisionError:
        return None


def rounds(rows: list[Row], columns: list[Column], grouped: bool = False) -> str:
    """Every round's value of the rows that have a direction (better higher or lower)."""
    lines = []
    for row in rows:
        if not row.better or row.versus:
            continue
        cells = [
            " / ".join(cell(row, run[row.key]) for run in c.runs.get(row.group, []) if row.key in run) or "–" for c in columns
        ]
        if any(text != "–" for text in cells):
            lines.append(([row.group] if grouped else []) + [row.label] + cells)
    header = (["workload"] if grouped else []) + ["figure"] + [f"{c.label}, each round" for c in columns]
    return markdown(header, lines)
