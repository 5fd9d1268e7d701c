"""``python -m services.ingest``."""

from services.ingest.app import main

main()
