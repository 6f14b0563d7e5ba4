"""Importing job descriptions written for other orchestrators (`podium import-score`)."""

from podium.core.importer.score import ImportResult, ScoreError, import_score, to_yaml

__all__ = ["ImportResult", "ScoreError", "import_score", "to_yaml"]
