"""Hand-built findings in the detector engine's contract: episodes, clears with ``cleared_by``, late (back-dated)
findings from a gateway's buffered outage, retracted silences, gateway faults and device health."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sitewatch.findings import Finding, Level

SH = ZoneInfo("Asia/Shanghai")
MIN = 60_000


def local_ms(hhmm: str, day: str = "2026-10-03") -> int:
    """Epoch ms of a site-local (Asia/Shanghai) wall-clock time."""
    return int(datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=SH).timestamp() * 1000)


OUT_FROM, OUT_TO = local_ms("02:10"), local_ms("02:14")
ARRIVED = local_ms("02:18")  # the gateway came back and flushed its buffer
RATED = 10.0
CRANE_EV = {"rated_load_t": RATED, "levels_pct": [90.0, 100.0, 110.0], "gateway": "gw-01"}
LINES = {1: 9.0, 2: 10.0, 3: 11.0}


def crane(level: int, ts: int, value: float, *, site: str = "cz-0001", device: str = "tc-01", late: bool = False,
          episode: dict | None = None, cleared_by: dict | None = None, **extra) -> Finding:
    """A crane overload finding (red = 110 % of 10 t, a major hazard)."""
    ev = dict(CRANE_EV)
    if late:
        ev.update(late=True, arrival_delay_s=(ARRIVED - ts) / 1000, outage=[OUT_FROM, OUT_TO])
    if episode is not None:
        ev["episode"] = episode
    if cleared_by is not None:
        ev["cleared_by"] = cleared_by
    ev.update(extra)
    lv = Level(level)
    threshold = LINES.get(level, 8.55)
    rule = f"load >= {int(threshold * 10)}% of rated 10 t ({threshold} t)" if level else "cleared: load below 8.55 t"
    return Finding(site=site, device=device, family="crane", kind="crane.overload", category="hazard", level=lv,
                   ts=ts, metric="load", value=value, threshold=threshold, rule=rule, source="GB/T 5031",
                   major=level >= 3, evidence=ev)


def late_overload_episode() -> list[Finding]:
    """What the engine emits for an overload inside the buffered window 02:10–02:14: orange at 02:10:30, red at
    02:11 (peak 11.5 t at 02:11:30, seen by the clear's episode), clear at 02:13:30 at 4 t."""
    t_or, t_red, t_peak, t_clr = OUT_FROM + 30_000, OUT_FROM + MIN, OUT_FROM + 90_000, OUT_FROM + 210_000
    ep = {"start": t_or, "first_breach": t_or}
    return [
        crane(2, t_or, 10.2, late=True, episode=dict(ep, peak=10.2, peak_ts=t_or, peak_x=10.2, last_breach=t_or,
                                                       worst=2)),
        crane(3, t_red, 11.2, late=True, episode=dict(ep, start=t_red, peak=11.2, peak_ts=t_red, peak_x=11.2,
                                                        last_breach=t_red, worst=3)),
        crane(0, t_clr, 4.0, late=True, cleared_by={"value": 4.0, "ts": t_clr},
              episode=dict(ep, start=t_red, peak=11.5, peak_ts=t_peak, peak_x=11.5, last_breach=t_clr - 30_000,
                           worst=3)),
    ]


def silent(level: int, ts: int, *, device: str = "tc-01", gateway: str | None = "gw-01", site: str = "cz-0001",
           retracted: bool = False, **extra) -> Finding:
    ev: dict = {"last_reading_ts": ts - 120_000, "silent_s": 120.0, "reassert": False}
    if gateway:
        ev["gateway"] = gateway
    if retracted:
        ev.update(retracted=True, measured_during=[OUT_FROM, OUT_TO])
    ev.update(extra)
    return Finding(site=site, device=device, family="crane", kind="fault.silent", category="fault",
                   level=Level(level), ts=ts, metric="*", value=120.0 if level else 0.0, threshold=90.0,
                   rule="no reading for >= 90 s" if level else "cleared: readings resumed", source="faults",
                   major=False, evidence=ev)


def gateway(level: int, ts: int, gw: str = "gw-01", site: str = "cz-0001") -> Finding:
    return Finding(site=site, device=f"gateway:{gw}", family="gateway", kind="fault.gateway_offline",
                   category="fault", level=Level(level), ts=ts, metric="online", value=0.0 if level else 1.0,
                   threshold=1.0, rule="gateway offline (MQTT last will)" if level else "cleared: gateway back online",
                   source="MQTT last will", major=False, evidence={"online": not level, "detail": {}})


def health(device: str, state: str, since: int, ts: int | None = None, site: str = "cz-0001",
           family: str = "crane", gateway: str | None = "gw-01", reason: str = "") -> Finding:
    return Finding(site=site, device=device, family=family, kind="device.health", category="health",
                   level=Level.CLEAR, ts=since if ts is None else ts, metric="*", value=0.0, threshold=0.0,
                   rule=f"device {state}", source="health", major=False,
                   evidence={"state": state, "since": since, "reason": reason or state, "gateway": gateway})
