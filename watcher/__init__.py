"""Wearable data pipeline: watch a landing folder, load CSV exports exactly once, rebuild dbt."""

__version__ = "0.1.0"
