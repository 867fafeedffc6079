"""Detectors: pure numpy over batches of readings plus small per-device state. No Kafka, MQTT or database here."""

from detectors.engine import DetectorEngine
from detectors.model import Finding, Level, ReadingBatch
from sitewatch.rules import RuleSet, RulesError, load_rules

__all__ = ["DetectorEngine", "Finding", "Level", "ReadingBatch", "RuleSet", "RulesError", "load_rules"]
