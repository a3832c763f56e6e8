"""Rows out of a listing command: a Rich table for a person, or one JSON document for a program.

Tables never cut data: every column folds (wraps inside a word when it must) instead of ending in `…`, and when
stdout is not a terminal (a pipe, a file, a test) the table takes the width it needs instead of Rich's 80
columns (Issue 10 item 10). Cells are `Text`, never markup, with control and bidi characters shown escaped.
"""

import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

from mcp_bastion.audit_reader import as_text
from mcp_bastion.cli.base import out

UNBOUNDED_WIDTH = 100_000  # a table off a terminal is measured against this, so only its content sets its width
MISSING = "-"
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

Row = dict[str, Any]


def text(value: object) -> str:
    """A field as one string (a missing one as `-`, a list or object as compact JSON)."""
    return MISSING if value is None else as_text(value)


def safe(value: object) -> str:
    """A field as printable text: control, line-separator and bidi characters shown escaped."""
    raw = text(value)
    if not UNSAFE.search(raw):
        return raw
    return UNSAFE.sub(lambda m: NAMED_ESCAPES.get(m[0]) or f"\\u{ord(m[0]):04x}", raw)


def cell(value: object, style: str = "") -> Text:
    """A table cell that is never markup."""
    return value if isinstance(value, Text) else Text(safe(value), style=style)


@dataclass(frozen=True)
class Col:
    """One column of a listing: its header, and the cell of a row (a key of the row, or a function of it)."""

    header: str
    value: str | Callable[[Row], object]
    style: str = ""
    no_wrap: bool = False  # ids that must stay copyable whole; they still fold rather than being cut

    def cell(self, row: Row) -> Text:
        return cell(row.get(self.value) if isinstance(self.value, str) else self.value(row), self.style)


def new_table(*headers: str | Col, title: str | None = None, caption: str | None = None) -> Table:
    """A table whose columns fold instead of truncating."""
    columns = [
        Column(h.header if isinstance(h, Col) else h, overflow="fold", no_wrap=isinstance(h, Col) and h.no_wrap)
        for h in headers
    ]
    return Table(*columns, title=title, caption=caption, title_justify="left")


def print_table(table: Table) -> None:
    """Print a table whole: wrapped to the terminal on a terminal, at its natural width anywhere else."""
    if out.is_terminal:
        out.print(table)
        return
    width = Measurement.get(out, out.options.update_width(UNBOUNDED_WIDTH), table).maximum
    # `print(width=)` cannot go past the console's own width (80 off a terminal): a console as wide as the table.
    wide = Console(file=out.file, width=max(width, 1), highlight=False, markup=False, emoji=False, no_color=True)
    wide.print(table)


def emit_json(document: dict[str, Any]) -> None:
    """One JSON object on stdout (ASCII: safe whatever the terminal's encoding)."""
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def listing(
    rows: Iterable[Row],
    columns: list[Col],
    *,
    as_json: bool,
    document: dict[str, Any],
    title: str | None = None,
    caption: str | None = None,
) -> None:
    """The one way a listing command prints: `document` as JSON, or the rows as a table of `columns`."""
    if as_json:
        emit_json(document)
        return
    table = new_table(*columns, title=title, caption=caption)
    for row in rows:
        table.add_row(*(column.cell(row) for column in columns))
    print_table(table)
