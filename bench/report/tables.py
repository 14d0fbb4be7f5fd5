"""Tables: plain text for the terminal, GitHub markdown for report.md, and the cell
formatting both use (a missing value is NONE, never "nan")."""
from __future__ import annotations

import math

NONE = "—"


def format_table(headers: list[str], rows: list[list]) -> str:
    """Plain-text table, column widths computed from the content."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def isnan(value) -> bool:
    """Missing: None, NaN, or pandas' NA (what a nullable Int64/boolean column holds)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return type(value).__name__ == "NAType"  # pandas.NA, without importing pandas here


def fmt(value, spec: str = ".3g", suffix: str = "") -> str:
    return NONE if isnan(value) else f"{value:{spec}}{suffix}"


def fmt_bytes(value) -> str:
    if isnan(value):
        return NONE
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def cell(value) -> str:
    # a '|' would end the cell and a newline the row
    return NONE if isnan(value) else str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame) -> str:
    """A DataFrame as a GitHub markdown table: pandas' to_markdown when `tabulate` is
    installed (it is optional in pandas), else the same layout written here."""
    if frame.empty:
        return "_(none)_"
    try:
        import tabulate  # noqa: F401
    except ImportError:
        cells = [[cell(c) for c in frame.columns]] + [[cell(v) for v in row]
                                                     for row in frame.itertuples(index=False)]
        widths = [max(3, *(len(r[i]) for r in cells)) for i in range(len(frame.columns))]
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
        lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
        return "\n".join(lines)
    return frame.map(cell).to_markdown(index=False)
