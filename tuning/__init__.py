"""Tuning tools for the ops team: replay recorded or synthetic history through the detectors (backtest) and
validate / diff rule files (rules). Offline: no Faust here."""
