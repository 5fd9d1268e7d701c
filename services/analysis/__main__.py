"""``python -m services.analysis``."""

from services.analysis.app import main

main()
