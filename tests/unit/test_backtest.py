"""``sitewatch backtest``: hand-made recordings where we know what fires, a generated day, and the JSON shape."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sitewatch.rules import RuleSet, load_rules
from tuning.backtest import (TicketBook, backtest, diff_books, generate_day, load_csv, replay)

T0 = 1_714_953_600_000  # 2024-05-06T00:00:00Z


def write_csv(path: Path, rows: list[tuple], unit: bool = True) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["site", "device", "family", "metric", "ts", "value"] + (["unit"] if unit else []))
        w.writerows(rows)
    return path


def crane_rows(values, device="tc-01", site="s-01", start=T0, step_ms=1000, unit="t"):
    return [(site, device, "crane", "load", start + i * step_ms, v, unit) for i, v in enumerate(values)]


def rules_dir(root: Path, site_yaml: str | None = None, name: str = "rules") -> Path:
    """A rules directory: built-in defaults (no defaults.yaml) plus one optional site file."""
    d = root / name
    (d / "sites").mkdir(parents=True)
    if site_yaml:
        (d / "sites" / "site.yaml").write_text(site_yaml)
    return d


def run_cli(*args: str):
    res = CliRunner().invoke(backtest, list(args), catch_exceptions=False)
    return res


RATED_12 = "site: s-01\ndevices:\n  tc-01: {family: crane, rated_load_t: 12.0}\n"
RATED_9 = "site: s-01\ndevices:\n  tc-01: {family: crane, rated_load_t: 9.0}\n"
HOLD_3 = "site: s-01\ndevices:\n  tc-01: {family: crane, overload: {hold_count: 3}}\n"


# ------------------------------------------------------------------------------------------------ what fires
def test_crane_peak_9_3_t_is_yellow_at_rated_10_and_suppressed_at_rated_12(tmp_path):
    """9.3 t is 93 % of 10 t (yellow, line 9 t) but 77.5 % of 12 t (below the 10.8 t yellow line)."""
    data = write_csv(tmp_path / "lift.csv", crane_rows([4.0, 6.0, 9.3, 9.3, 9.3, 7.0, 4.0, 4.0]))
    res = run_cli("--csv", str(data), "--rules", str(rules_dir(tmp_path, RATED_12, "cand")),
                  "--baseline", str(rules_dir(tmp_path, None, "base")), "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    base, cand = rep["configs"]["baseline"], rep["configs"]["candidate"]
    assert base["tickets"]["by_level"] == {"yellow": 1, "orange": 0, "red": 0}
    assert base["by_kind"] == {"crane.overload": {"yellow": 1, "orange": 0, "red": 0, "total": 1}}
    assert base["first_alarm"] == [{"site": "s-01", "device": "tc-01", "kind": "crane.overload", "ts": T0 + 2000,
                                    "after_s": 2.0, "level": "yellow"}]
    assert cand["tickets"]["total"] == 0
    d = rep["diff"]
    assert d["summary"]["suppressed"] == 1 and d["summary"]["new"] == 0 and d["summary"]["level_changes"] == 0
    sup = d["suppressed"][0]
    assert (sup["device"], sup["kind"], sup["peak_level"], sup["peak_value"]) == ("tc-01", "crane.overload",
                                                                                  "yellow", 9.3)
    assert sup["opened_ms"] == T0 + 2000 and sup["cleared_ms"] == T0 + 5000  # 7.0 t < 0.95 x 9 t clears it
    assert d["first_alarm"] == [{"key": "s-01/tc-01/crane.overload", "baseline_ms": T0 + 2000, "candidate_ms": None,
                                 "change": "none", "delta_s": None}]


def test_lower_rating_shows_a_level_change_and_the_text_report_says_so(tmp_path):
    """At rated 9 t the same 9.3 t lift is 103 %: orange instead of yellow."""
    data = write_csv(tmp_path / "lift.csv", crane_rows([4.0, 9.3, 9.3, 4.0]))
    res = run_cli("--csv", str(data), "--rules", str(rules_dir(tmp_path, RATED_9, "cand")),
                  "--baseline", str(rules_dir(tmp_path, None, "base")))
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "0 new, 0 suppressed, 1 level changes" in out
    assert "level changes" in out and "yellow" in out and "orange" in out
    assert "crane.overload" in out


def test_earlier_first_alarm_is_reported(tmp_path):
    """A lower rating fires on the 8.5 t lift two seconds before the 9.3 t one the baseline catches."""
    data = write_csv(tmp_path / "lift.csv", crane_rows([4.0, 8.5, 8.5, 9.3, 9.3, 4.0]))
    rec = load_csv(data)
    base = RuleSet.default()
    cand = RuleSet.from_yaml_text("site: s-01\ndevices:\n  tc-01: {family: crane, rated_load_t: 9.0}\n")
    r = replay(rec, {"baseline": base, "candidate": cand})
    d = diff_books(r.books["baseline"], r.books["candidate"])
    assert d["first_alarm"] == [{"key": "s-01/tc-01/crane.overload", "baseline_ms": T0 + 3000,
                                 "candidate_ms": T0 + 1000, "change": "earlier", "delta_s": -2.0}]
    assert d["summary"]["first_alarm_earlier"] == 1


# ------------------------------------------------------------------------------------------------ flapping
def test_raise_clear_raise_cycles_count_as_flaps_and_hold_count_removes_them(tmp_path):
    """Six lifts to 9.3 t, ten seconds apart: six tickets, five re-opened within the 10 min window."""
    values = ([9.3] * 2 + [4.0] * 8) * 6
    data = write_csv(tmp_path / "dither.csv", crane_rows(values))
    rec = load_csv(data)
    cand = RuleSet.from_yaml_text(HOLD_3)
    r = replay(rec, {"baseline": RuleSet.default(), "candidate": cand})
    base = r.books["baseline"]
    assert len(base.tickets) == 6
    assert sum(t.flap for t in base.tickets) == 5 and not base.tickets[0].flap
    assert r.books["candidate"].tickets == [], "two readings never satisfy hold_count 3"
    d = diff_books(base, r.books["candidate"])
    assert d["summary"]["flaps_baseline"] == 5 and d["summary"]["flaps_candidate"] == 0
    assert d["summary"]["suppressed"] == 6
    # the same cycles spread further apart than the window are not flaps
    r2 = replay(rec, {"baseline": RuleSet.default()}, flap_window_s=5)
    assert sum(t.flap for t in r2.books["baseline"].tickets) == 0


def test_a_value_dithering_on_the_line_inside_the_hysteresis_band_opens_one_ticket(tmp_path):
    """8.9 / 9.1 around the 9 t yellow line never falls below the 8.55 t clear line: one ticket, no flap."""
    data = write_csv(tmp_path / "dither.csv", crane_rows([8.9, 9.1] * 60))
    r = replay(load_csv(data), {"baseline": RuleSet.default()})
    book = r.books["baseline"]
    assert [(t.peak_level, t.flap, t.cleared_ms) for t in book.tickets] == [(1, False, None)]
    assert len(book.open) == 1


def test_ticket_book_counts_an_episode_from_raise_to_clear():
    from sitewatch.findings import Finding, Level

    def f(ts, level, value=9.5):
        return Finding("s", "d", "crane", "crane.overload", "hazard", Level(level), ts, "load", value, 9.0, "r")

    book = TicketBook(flap_window_ms=600_000)
    book.add([f(0, 1), f(1000, 2, 10.2), f(2000, 1), f(60_000, 1), f(61_000, 0), f(900_000, 3, 11.5)])
    a, b = book.tickets
    assert (a.level, a.peak_level, a.peak_value, a.cleared_ms, a.changes) == (1, 2, 10.2, 61_000,
                                                                              [(1000, 2), (2000, 1)])
    assert (b.peak_level, b.flap, b.cleared_ms) == (3, False, None), "opened 15 min after the last one"


# ------------------------------------------------------------------------------------------------ inputs
def test_csv_rows_are_validated_with_the_contract_and_bad_rows_are_counted_not_fatal(tmp_path):
    rows = [
        ("s-01", "tc-01", "crane", "load", "2024-05-06T00:00:00Z", "4000", "kg"),  # RFC 3339 and kg -> 4 t
        ("s-01", "tc-01", "crane", "load", T0 + 1000, "9.3", "t"),
        ("s-01", "r-01", "rocket", "thrust", T0, "1", "N"),
        ("s-01", "tc-01", "crane", "torque", T0, "1", "t"),
        ("s-01", "tc-01", "crane", "load", T0 + 2000, "3", "lb"),
        ("s-01", "tc-01", "crane", "load", T0 + 3000, "heavy", "t"),
        ("s-01", "tc-01", "crane", "load", "yesterday", "3", "t"),
        ("s-01", "tc-01", "crane", "load", T0 + 4000, "4.0", ""),  # empty unit: the canonical unit
    ]
    rec = load_csv(write_csv(tmp_path / "mixed.csv", rows))
    assert rec.rows_read == 8 and len(rec) == 3
    assert dict(rec.rejected) == {"unknown_family": 1, "unknown_metric": 1, "wrong_unit": 1,
                                  "non_numeric_value": 1, "bad_timestamp": 1}
    assert rec.ts.tolist() == [T0, T0 + 1000, T0 + 4000]
    assert rec.value.tolist() == pytest.approx([4.0, 9.3, 4.0])
    assert rec.examples["non_numeric_value"].endswith("mixed.csv:7: value must be a number, got 'heavy'")
    assert "mixed.csv:4: 'rocket' is not one of" in rec.examples["unknown_family"]


def test_csv_without_unit_column_uses_canonical_units_and_from_to_filter(tmp_path):
    rows = [r[:6] for r in crane_rows([4.0, 9.3, 9.3, 4.0, 9.5, 9.5])]
    data = write_csv(tmp_path / "nounit.csv", rows, unit=False)
    rec = load_csv(data, t_from=T0 + 3000, t_to=T0 + 6000)
    assert rec.ts.tolist() == [T0 + 3000, T0 + 4000, T0 + 5000]
    res = run_cli("--csv", str(data), "--rules", str(rules_dir(tmp_path, RATED_12, "c")),
                  "--baseline", str(rules_dir(tmp_path, None, "b")), "--from", "2024-05-06T00:00:03Z",
                  "--to", str(T0 + 6000), "--json")
    rep = json.loads(res.stdout)
    assert rep["input"]["rows_valid"] == 3
    assert rep["configs"]["baseline"]["tickets_list"][0]["opened_ms"] == T0 + 4000


def test_missing_columns_and_missing_source_are_usage_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("site,device,value\ns,d,1\n")
    cand = rules_dir(tmp_path)
    res = CliRunner().invoke(backtest, ["--csv", str(bad), "--rules", str(cand)])
    assert res.exit_code == 2 and "missing" in res.output
    res = CliRunner().invoke(backtest, ["--rules", str(cand)])
    assert res.exit_code == 2 and "exactly one of --csv, --parquet, --kafka-topic" in res.output
    res = CliRunner().invoke(backtest, ["--csv", str(bad)])
    assert res.exit_code == 2 and "--rules" in res.output


def test_parquet_and_csv_of_the_same_recording_fire_the_same(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = crane_rows([4.0, 9.3, 9.3, 4.0, 11.5, 11.5, 4.0])
    csv_path = write_csv(tmp_path / "lift.csv", rows)
    cols = list(zip(*rows))
    pq.write_table(pa.table({name: list(col) for name, col in
                             zip(["site", "device", "family", "metric", "ts", "value", "unit"], cols)}),
                   tmp_path / "lift.parquet")
    rules = str(rules_dir(tmp_path))
    reports = [json.loads(run_cli(flag, str(path), "--rules", rules, "--json").stdout)
               for flag, path in (("--csv", csv_path), ("--parquet", tmp_path / "lift.parquet"))]
    tickets = [r["configs"]["candidate"]["tickets_list"] for r in reports]
    assert tickets[0] and tickets[0] == tickets[1]
    assert reports[1]["input"]["rows_valid"] == len(rows)


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what a machine without pyarrow looks like to import
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    p = tmp_path / "x.parquet"
    p.write_bytes(b"PAR1")
    res = CliRunner().invoke(backtest, ["--parquet", str(p), "--rules", str(rules_dir(tmp_path))])
    assert res.exit_code == 2 and "pip install pyarrow" in res.output


def test_invalid_candidate_rules_stop_the_backtest_with_file_and_line(tmp_path):
    data = write_csv(tmp_path / "lift.csv", crane_rows([4.0]))
    cand = rules_dir(tmp_path, "site: s-01\ndevices:\n  tc-01: {family: crane, rated_load_t: -1}\n")
    res = CliRunner().invoke(backtest, ["--csv", str(data), "--rules", str(cand)])
    assert res.exit_code == 1
    assert "site.yaml:3: devices.tc-01.rated_load_t" in res.stderr


# ------------------------------------------------------------------------------------------------ clock
def crane_deadman_s() -> int:
    """The crane deadman of the built-in rules, whatever the engine's current defaults make it."""
    from detectors.engine import DetectorEngine

    return DetectorEngine(RuleSet.default()).plan("s-01", "tc-01", "crane").silent_ms // 1000


def test_silent_sensor_faults_appear_in_replay_and_sparse_ticks_equal_every_tick(tmp_path):
    """tc-01 stops for deadman + 30 s mid-run and again well before the end; tc-02 keeps the recording going.

    The replay ticks only at clock steps where a deadman can pass; ticking every step must give the same.
    """
    dm = crane_deadman_s()
    gap_end, stop, n = 100 + dm + 30, 100 + dm + 30 + 150, 100 + dm + 30 + 150 + dm + 60
    on = [t for t in range(0, n) if not (100 <= t < gap_end or t >= stop)]
    rows = [("s-01", "tc-01", "crane", "load", T0 + t * 1000, 4.0 + (t % 2) * 0.1, "t") for t in on]
    rows += [("s-01", "tc-02", "crane", "load", T0 + t * 1000, 4.0 + (t % 3) * 0.1, "t") for t in range(n)]
    rec = load_csv(write_csv(tmp_path / "silent.csv", rows))
    rules = {"baseline": RuleSet.default()}
    fast = replay(rec, rules, batch_size=64, tick_step_s=5)
    slow = replay(rec, rules, batch_size=64, tick_step_s=5, every_step=True)
    silent = [(t.device, t.opened_ms - T0, t.cleared_ms and t.cleared_ms - T0)
              for t in fast.books["baseline"].tickets if t.kind == "fault.silent"]
    first_step = lambda last: (last + dm) // 5 * 5 + 5  # noqa: E731  the first 5 s step past the deadman
    assert silent == [("tc-01", first_step(99) * 1000, gap_end * 1000),
                      ("tc-01", first_step(stop - 1) * 1000, None)]
    assert fast.books["baseline"].findings == slow.books["baseline"].findings
    assert ([t.to_dict() for t in fast.books["baseline"].tickets]
            == [t.to_dict() for t in slow.books["baseline"].tickets])
    none = replay(rec, rules, tick_step_s=0)
    assert not [t for t in none.books["baseline"].tickets if t.kind == "fault.silent"]


def test_batch_size_does_not_change_the_outcome(tmp_path):
    values = ([9.3] * 3 + [4.0] * 7) * 5 + [11.5] * 4 + [4.0] * 3
    rec = load_csv(write_csv(tmp_path / "lift.csv", crane_rows(values)))
    dicts = [[t.to_dict() for t in replay(rec, {"b": RuleSet.default()}, batch_size=n).books["b"].tickets]
             for n in (1, 7, 50_000)]
    assert dicts[0] == dicts[1] == dicts[2] and len(dicts[0]) == 6


# ------------------------------------------------------------------------------------------------ a recorded day
@pytest.fixture(scope="module")
def day_csv(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("day") / "day.csv"
    n = generate_day(out, interval_s=60, scenario="pit-creep", at_s=10 * 3600)
    assert n == 24 * 60 * 24  # one site, one device per family: 24 sensors x 1440 minutes
    return out


def test_generated_day_is_deterministic_and_contains_the_episode(day_csv, tmp_path):
    again = tmp_path / "again.csv"
    generate_day(again, interval_s=60, scenario="pit-creep", at_s=10 * 3600)
    assert again.read_bytes() == day_csv.read_bytes()
    rec = load_csv(day_csv)
    assert rec.rejected == {} and rec.ts[-1] - rec.ts[0] == (24 * 60 - 1) * 60_000
    wall = (rec.device == "jc-01") & (rec.metric == "wall_top_horizontal")
    assert rec.value[wall].max() == pytest.approx(32.0)


def test_raising_the_pit_alarm_value_suppresses_the_tickets_the_baseline_fired(day_csv, tmp_path):
    cand = rules_dir(tmp_path, "site: cz-0001\nfamily_overrides:\n  pit:\n    metrics:\n"
                               "      wall_top_horizontal: {alarm: 50.0}\n")
    res = run_cli("--csv", str(day_csv), "--rules", str(cand), "--baseline", str(rules_dir(tmp_path, None, "b")),
                  "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    base = [t for t in rep["configs"]["baseline"]["tickets_list"] if t["kind"].startswith("pit.")]
    assert [(t["device"], t["kind"], t["peak_level"], t["major"]) for t in base] == [
        ("jc-01", "pit.cumulative", "red", True)]
    assert base[0]["opened_ms"] > T0 + 10 * 3600_000
    cand_pit = [t for t in rep["configs"]["candidate"]["tickets_list"] if t["kind"].startswith("pit.")]
    assert cand_pit == []
    sup = [(t["device"], t["kind"]) for t in rep["diff"]["suppressed"]]
    assert sup == [("jc-01", "pit.cumulative")]
    assert rep["diff"]["new"] == [] and rep["diff"]["summary"]["suppressed"] == 1
    # everything else on the site is untouched by a pit-only change
    others = lambda c: [(t["kind"], t["opened_ms"]) for t in rep["configs"][c]["tickets_list"]  # noqa: E731
                        if not t["kind"].startswith("pit.")]
    assert others("baseline") == others("candidate")


def test_generate_day_command(tmp_path):
    out = tmp_path / "d.csv"
    res = run_cli("--generate-day", str(out), "--interval", "600", "--scenario", "crane-overload")
    assert res.exit_code == 0 and out.exists()
    assert "wrote 3456 readings" in res.output  # 24 sensors x 144 ten-minute steps


# ------------------------------------------------------------------------------------------------ output
def test_json_report_shape(tmp_path):
    data = write_csv(tmp_path / "lift.csv", crane_rows([4.0, 9.3, 9.3, 4.0]) + [("s-01", "x", "rocket", "t", T0, 1, "N")])
    res = run_cli("--csv", str(data), "--rules", str(rules_dir(tmp_path, RATED_12, "c")),
                  "--baseline", str(rules_dir(tmp_path, None, "b")), "--json")
    rep = json.loads(res.stdout)
    assert set(rep) == {"v", "input", "settings", "replay", "warnings", "configs", "diff", "delivery"}
    assert rep["v"] == 1
    assert set(rep["input"]) >= {"source", "rows_read", "rows_valid", "rejected", "devices", "from_ms", "to_ms"}
    assert rep["input"]["rejected"] == {"unknown_family": 1}
    assert set(rep["configs"]) == {"baseline", "candidate"}
    for c in rep["configs"].values():
        assert set(c) == {"rules", "fingerprint", "findings", "tickets", "by_kind", "by_device", "first_alarm",
                          "flapping", "tickets_list", "late_findings", "late_tickets", "by_category"}
        assert set(c["tickets"]) == {"total", "by_level", "hazard", "fault", "major", "open_at_end"}
        assert set(c["flapping"]) == {"total", "by_key"}
    dev = rep["configs"]["baseline"]["by_device"][0]
    assert dev == {"site": "s-01", "device": "tc-01", "family": "crane", "tickets": 1, "peak_level": "yellow",
                   "by_level": {"yellow": 1, "orange": 0, "red": 0}, "flaps": 0}
    assert set(rep["diff"]) == {"summary", "new", "suppressed", "level_changes", "first_alarm"}
    assert set(rep["diff"]["summary"]) == {"new", "suppressed", "level_changes", "first_alarm_earlier",
                                           "first_alarm_later", "tickets_baseline", "tickets_candidate",
                                           "flaps_baseline", "flaps_candidate"}
    assert rep["settings"]["tick_step_s"] == 60.0 and rep["replay"]["start_ms"] == T0
    assert rep["delivery"]["order"] == "measurement time" and rep["delivery"]["late_readings"] is None
    assert rep["configs"]["baseline"]["by_category"] == {"hazard": {"crane.overload": 1}}
    assert "rows/s" in res.stderr, "progress and throughput go to stderr, never into the JSON"


def test_baseline_defaults_to_the_current_config(tmp_path, monkeypatch):
    """No --baseline: $SW_RULES_PATH (here the repository's config/rules, where tc-01 of cz-0412 is rated 8 t)."""
    repo_rules = Path(__file__).resolve().parents[2] / "config" / "rules"
    monkeypatch.setenv("SW_RULES_PATH", str(repo_rules))
    data = write_csv(tmp_path / "lift.csv", crane_rows([4.0, 7.5, 7.5, 4.0], site="cz-0412"))
    cand = rules_dir(tmp_path, "site: cz-0412\ndevices:\n  tc-01: {family: crane, rated_load_t: 10.0}\n")
    res = run_cli("--csv", str(data), "--rules", str(cand), "--json")
    rep = json.loads(res.stdout)
    assert rep["settings"]["baseline"] == str(repo_rules)
    assert rep["configs"]["baseline"]["fingerprint"] == load_rules(repo_rules).fingerprint
    assert rep["diff"]["summary"]["suppressed"] == 1, "7.5 t is 94 % of 8 t but 75 % of 10 t"
