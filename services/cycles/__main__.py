"""``python -m services.cycles``."""

from services.cycles.app import main

main()
