"""Version 1 of the contracts, one module per domain (``schemas.messages`` re-exports them)."""
