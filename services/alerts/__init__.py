"""Alerts: live rules on samples and analysis results."""
