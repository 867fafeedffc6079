"""Inhibition: a finding is not ticketed while a ticket it is a consequence of is open and active.

Semantics of Alertmanager's ``inhibit_rules``: a *target* finding (labels match ``target_match``) is inhibited
while a *source* ticket (labels match ``source_match``) is open with its condition present, and source and
target have the same value for every label named in ``equal`` (a label missing on both sides counts as equal,
as in Alertmanager). A ticket never inhibits findings of its own key.

The built-in rule: devices behind an offline gateway fall silent because the gateway is down, not because each
device failed; one gateway ticket is the news, not thirty silent-sensor tickets::

    name: gateway-offline-silences
    source_match: {kind: fault.gateway_offline}
    target_match: {kind: fault.silent}
    equal: [site, gateway]

A fault must never inhibit a hazard: a dead gateway cannot make a crane overload less real. ``check_rule``
refuses a rule whose source may be a fault and whose target may be a hazard, and ``Inhibitor.inhibits`` refuses
it again for each pair (defensive: rules may come from elsewhere).

Rules are duck-typed: any object with ``name``, ``source_match`` (dict), ``target_match`` (dict) and ``equal``
(list of label names) — the rules file's pydantic model (``RuleSet.inhibit_rules()``) or :class:`InhibitRule`.
Match values are strings (exact) or lists of strings (any of them); ``level`` also takes 1-3.

Pure: no database here. Labels come from ``finding_labels`` / ``ticket_labels``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

log = logging.getLogger("sitewatch.backlog.inhibit")

LABELS = ("site", "device", "family", "kind", "category", "level", "gateway", "metric")
LEVEL_NAMES = {0: "clear", 1: "yellow", 2: "orange", 3: "red"}
GATEWAY_PREFIX = "gateway:"


class InhibitRuleError(ValueError):
    """A rule that must not be used (e.g. a fault inhibiting a hazard)."""


@dataclass(frozen=True)
class InhibitRule:
    name: str
    source_match: dict[str, Any] = field(default_factory=dict)
    target_match: dict[str, Any] = field(default_factory=dict)
    equal: list[str] = field(default_factory=list)


GATEWAY_RULE = InhibitRule(
    name="gateway-offline-silences",
    source_match={"kind": "fault.gateway_offline"},
    target_match={"kind": "fault.silent"},
    equal=["site", "gateway"],
)
DEFAULT_RULES: tuple[InhibitRule, ...] = (GATEWAY_RULE,)


# ------------------------------------------------------------------------------------------------ labels
def level_name(level: Any) -> str:
    try:
        return LEVEL_NAMES.get(int(level), str(level))
    except (TypeError, ValueError):
        return str(level)


def gateway_of(device: str, evidence: Mapping[str, Any] | None) -> str | None:
    """``evidence.gateway``; a gateway's own ticket (device ``gateway:gw-01``) is labelled ``gw-01``."""
    gw = (evidence or {}).get("gateway")
    if gw:
        return str(gw)
    if device.startswith(GATEWAY_PREFIX):
        return device[len(GATEWAY_PREFIX):]
    return None


def finding_labels(f: Any) -> dict[str, str]:
    return _labels(f.site, f.device, f.family, f.kind, f.category, f.level, f.metric, f.evidence)


def ticket_labels(t: Any) -> dict[str, str]:
    return _labels(t.site, t.device, t.family, t.kind, t.category, t.level, t.metric, t.evidence)


def _labels(site, device, family, kind, category, level, metric, evidence) -> dict[str, str]:
    out = {"site": site, "device": device, "family": family, "kind": kind, "category": category,
           "level": level_name(level), "metric": metric}
    gw = gateway_of(device or "", evidence if isinstance(evidence, Mapping) else None)
    if gw is not None:
        out["gateway"] = gw
    return {k: str(v) for k, v in out.items() if v is not None}


# ------------------------------------------------------------------------------------------------ matching
def _wanted(key: str, value: Any) -> set[str]:
    values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
    if key == "level":
        return {level_name(v) if isinstance(v, int) or str(v).isdigit() else str(v) for v in values}
    return {str(v) for v in values}


def matches(match: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Every label named in ``match`` has one of the given values (a missing label matches nothing)."""
    return all(k in labels and labels[k] in _wanted(k, v) for k, v in match.items())


def _may_be(match: Mapping[str, Any], category: str) -> bool:
    """Could a finding matching ``match`` be of ``category`` (hazard | fault)? Unconstrained means yes."""
    if "category" in match:
        return category in _wanted("category", match["category"])
    if "kind" in match:
        kinds = _wanted("kind", match["kind"])
        faulty = {k.startswith("fault.") for k in kinds}
        return (True in faulty) if category == "fault" else (False in faulty)
    return True


def check_rule(rule: Any) -> None:
    """Raise InhibitRuleError for a malformed rule or one that would let a fault inhibit a hazard."""
    name = getattr(rule, "name", None)
    for attr in ("source_match", "target_match", "equal"):
        if not hasattr(rule, attr):
            raise InhibitRuleError(f"inhibit rule {name!r}: missing {attr}")
    if not isinstance(rule.source_match, Mapping) or not isinstance(rule.target_match, Mapping):
        raise InhibitRuleError(f"inhibit rule {name!r}: source_match and target_match must be mappings")
    unknown = [k for k in [*rule.source_match, *rule.target_match, *rule.equal] if k not in LABELS]
    if unknown:
        raise InhibitRuleError(f"inhibit rule {name!r}: unknown label(s) {', '.join(map(str, unknown))} "
                               f"(labels: {', '.join(LABELS)})")
    if not rule.target_match:
        raise InhibitRuleError(f"inhibit rule {name!r}: an empty target_match would inhibit everything")
    if _may_be(rule.source_match, "fault") and _may_be(rule.target_match, "hazard"):
        raise InhibitRuleError(
            f"inhibit rule {name!r}: a fault must never inhibit a hazard; restrict target_match to faults "
            "(category: fault or kind: fault.*) or source_match to hazards")


class Inhibitor:
    """A checked set of rules. Refused rules are logged, kept in ``refused`` and never applied."""

    def __init__(self, rules: Iterable[Any] | None = None):
        self.rules: list[Any] = []
        self.refused: list[tuple[Any, str]] = []
        for r in DEFAULT_RULES if rules is None else rules:
            try:
                check_rule(r)
            except InhibitRuleError as e:
                log.error("%s — rule ignored", e)
                self.refused.append((r, str(e)))
                continue
            self.rules.append(r)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def target_rules(self, labels: Mapping[str, str]) -> list[Any]:
        """Rules whose target side matches these labels (cheap pre-check before looking for sources)."""
        return [r for r in self.rules if matches(r.target_match, labels)]

    def is_source(self, labels: Mapping[str, str]) -> bool:
        return any(matches(r.source_match, labels) for r in self.rules)

    @staticmethod
    def inhibits(rule: Any, source: Mapping[str, str], target: Mapping[str, str]) -> bool:
        """Does ``source`` (an open, active ticket's labels) inhibit ``target`` under ``rule``?"""
        if source.get("category") != "hazard" and target.get("category") == "hazard":
            return False  # defensive: whatever the rule says, a fault never hides a hazard
        if not (matches(rule.source_match, source) and matches(rule.target_match, target)):
            return False
        if all(source.get(k) == target.get(k) for k in ("site", "device", "kind")):
            return False  # never itself
        return all(source.get(k, "") == target.get(k, "") for k in rule.equal)

    def find(self, target: Mapping[str, str], sources: Sequence[tuple[Any, Mapping[str, str]]]
             ) -> tuple[Any, Any] | None:
        """The first (rule, source object) inhibiting ``target`` among ``sources`` = [(obj, labels)], or None."""
        for rule in self.target_rules(target):
            for obj, labels in sources:
                if self.inhibits(rule, labels, target):
                    return rule, obj
        return None


def source_kinds(inhibitor: Inhibitor) -> set[str] | None:
    """The ticket kinds that can be sources (None: any kind — a rule's source_match does not name one)."""
    kinds: set[str] = set()
    for r in inhibitor.rules:
        if "kind" not in r.source_match:
            return None
        kinds |= _wanted("kind", r.source_match["kind"])
    return kinds
