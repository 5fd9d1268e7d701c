"""Analysis: compares every finished cycle with its reference — consumes cycle events."""
