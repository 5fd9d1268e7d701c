"""Pieces every service shares: settings, bus set-up, the durable consumer loop, database access."""
