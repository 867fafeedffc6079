"""Detectors: pure numpy over batches of readings plus small per-device state. No Kafka, MQTT or database here.

Findings (what the detectors emit) are a contract of the core: ``sitewatch.findings``."""

from detectors.engine import DetectorEngine
from detectors.model import ReadingBatch
from sitewatch.rules import RuleSet, RulesError, load_rules

__all__ = ["DetectorEngine", "ReadingBatch", "RuleSet", "RulesError", "load_rules"]
