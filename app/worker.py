"""The worker put together: the Faust app and its five stages, with the hazard ledger (backlog) and the notifier
(alerts) handed to the stages that need them. This is the only place where streams, backlog and alerts meet.

Configuration: ``$SW_RULES_PATH`` (detector rules and inhibit rules), ``$SW_ALERTS_CONFIG`` (routing YAML, see
docs/alerts.md) or, without it, ``$SW_WEBHOOK_URL`` alone: one receiver that gets every alert at once
(HMAC-signed with ``$SW_WEBHOOK_SECRET``).
"""

from __future__ import annotations

import logging
import os

from alerts.config import AlertsConfig, load_config, webhook_only
from alerts.delivery_log import DeliveryLog
from alerts.notifier import Notifier
from blackbox.chain import Recorder
from blackbox.readings import ReadingLog
from backlog.store import Backlog
from sitewatch.settings import Settings
from streams import detect, notify, report, tickets, validate
from streams.pipeline import Pipeline, create_app
from streams.state_snapshots import StateSnapshots, wanted

log = logging.getLogger("sitewatch.worker")


def inhibit_rules(settings: Settings):
    """``site -> rules`` from the rules files, or None (the backlog's built-in defaults).

    Read once at start; an unreadable rules path falls back to the defaults (the detect stage reports bad rules).
    """
    path = getattr(settings, "rules_path", None)
    if not path:
        return None
    try:
        from sitewatch.rules import load_rules

        ruleset = load_rules(path)
    except Exception as e:  # noqa: BLE001 - the detect stage reports bad rules; tickets keep the defaults
        log.warning("inhibit rules: cannot load %s (%s); using the built-in rules", path, e)
        return None
    return lambda site: ruleset.inhibit_rules(site=site)


def build_notifier(settings: Settings) -> Notifier:
    path = os.environ.get("SW_ALERTS_CONFIG")
    if path:
        cfg = load_config(path)
        log.info("alerts: routing from %s (%d receivers, %d routes)", path, len(cfg.receivers), len(cfg.routes))
    elif settings.webhook_url:
        cfg = webhook_only(settings.webhook_url, settings.webhook_secret)
    else:
        log.warning("no receiver configured (SW_ALERTS_CONFIG and SW_WEBHOOK_URL unset): "
                    "alerts are logged in the delivery log only")
        cfg = AlertsConfig.model_validate({"receivers": {}})
    log_db = DeliveryLog(settings.backlog_url)
    if not path:
        return Notifier(log_db, cfg)
    readers = Backlog(settings.backlog_url, create=False)
    return Notifier(log_db, cfg, ticket_state=readers.ticket_state, company_of=readers.company_of)


def build_reading_record(settings: Settings) -> ReadingLog | None:
    """The tamper-evident record of every batch of readings received: per site, once per window
    (``SW_BLACKBOX_READINGS_EVERY_S``), a digest, the count and the time range appended to the site's chain.
    ``SW_BLACKBOX_RECORD=false`` exists for one reason: the baseline of ``sitewatch bench chain``."""
    if not settings.blackbox_record:
        log.warning("tamper-evident record OFF (SW_BLACKBOX_RECORD=false): readings and findings are not recorded")
        return None
    return ReadingLog(Recorder(settings.backlog_url), every_s=settings.blackbox_readings_every_s,
                      extra={"worker": settings.worker_id})


def build_snapshots(settings: Settings) -> StateSnapshots | None:
    """The detect stage's state snapshots in the backlog database (``SW_STATE_SNAPSHOTS``, see
    streams/state_snapshots.py): on for the local stack, whose in-memory Kafka loses the state changelog on a full
    stop; off-able where the Kafka changelog is replicated."""
    if not wanted(settings.state_snapshots, settings.backlog_url, settings.kafka_bootstrap):
        log.info("state snapshots off: detector state lives in the Kafka changelog only")
        return None
    return StateSnapshots(settings.backlog_url)


def build_worker(settings: Settings) -> Pipeline:
    """The Faust app with every stage registered: validate → detect → tickets → notify, and the progress report."""
    pipe = create_app(settings)
    validate.register(pipe)
    detect.register(pipe, build_snapshots(settings), build_reading_record(settings))
    ledger = Backlog(settings.backlog_url, inhibit_rules=inhibit_rules(settings))
    ledger.blackbox = ledger.blackbox and settings.blackbox_record  # findings and ticket events on the record
    tickets.register(pipe, ledger)
    notify.register(pipe, build_notifier(settings))
    report.register(pipe)
    return pipe
