"""The fault suite's summary: JSON for machines, a Markdown table for people, and the README block.

    python -m tests.faults.report [summary.json]   # print the table of the last run
    python -m tests.faults.report --readme [...]   # and put it into README.md between the faults markers

``make faults`` (full durations) updates the README itself; CI only prints the table (its checkout is thrown away).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

BEGIN, END = "<!-- faults:begin -->", "<!-- faults:end -->"
REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / ".sitewatch" / "faults" / "summary.json"


def summary(rows: list[dict], full: bool) -> dict:
    return {"mode": "full (make faults)" if full else "short (CI)", "finished": time.strftime("%Y-%m-%d %H:%M %Z"),
            "rows": rows}


def _n(row: dict, key: str) -> str:
    v = row.get(key)
    return "–" if v is None else f"{v:,}" if isinstance(v, int) else str(v)


def markdown(data: dict) -> str:
    lines = [
        f"Run: {data['mode']}, {data['finished']}.",
        "",
        "| fault | what was done | readings published / acknowledged / lost | tickets / duplicates "
        "| alerts delivered / duplicate deliveries | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        readings = f"{_n(r, 'published')} / {_n(r, 'acked')} / **{_n(r, 'lost')}**"
        if r.get("influx_lost") is not None:
            readings += f" (InfluxDB: {_n(r, 'influx_stored')} stored, **{_n(r, 'influx_lost')}** lost)"
        tickets = f"{_n(r, 'tickets')} / **{_n(r, 'duplicate_tickets')}**"
        alerts = f"{_n(r, 'alerts_delivered')} of {_n(r, 'alerts')} / {_n(r, 'duplicate_deliveries')}"
        result = r["result"]
        if r.get("drained_s") is not None:
            result += f" (drained {r['drained_s']} s after recovery)"
        lines.append(f"| {r['fault']} | {r['done']} | {readings} | {tickets} | {alerts} | {result} |")
    return "\n".join(lines)


def write(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    path.with_suffix(".md").write_text(markdown(data) + "\n")


def update_readme(readme: Path, data: dict) -> bool:
    """Replace the block between the markers (in place, nothing else touched); False when there are no markers."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{markdown(data)}\n{END}{tail}")
    return True


def main(argv: list[str]) -> int:
    readme = "--readme" in argv
    paths = [a for a in argv if a != "--readme"]
    path = Path(paths[0]) if paths else DEFAULT
    if not path.exists():
        print(f"no fault-suite summary at {path}: run `make faults` (or pytest tests/faults) first", file=sys.stderr)
        return 1
    data = json.loads(path.read_text())
    print(markdown(data))
    if readme and not update_readme(REPO / "README.md", data):
        print("README.md has no faults markers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
