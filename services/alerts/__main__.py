"""``python -m services.alerts``."""

from services.alerts.app import main

main()
