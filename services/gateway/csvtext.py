"""Text cells of the CSV files VerTac writes (samples, analyses, history, datasets): quoted
when they hold a separator, a quote or a line break, and never read as a formula by a
spreadsheet (a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
leading ``'``, as OWASP recommends). Numbers are written as numbers, never through here."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutral(text: str) -> str:
    """``text`` as a spreadsheet shows it without evaluating it."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def cell(value: object) -> str:
    """One CSV text cell: neutralised, then quoted where needed (RFC 4180)."""
    text = neutral("" if value is None else str(value))
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text
