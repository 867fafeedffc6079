"""Where the line protocol goes: one small interface, two backends.

- ``InfluxV1Writer``: InfluxDB 1.x ``/write`` over HTTP with httpx (the local default: Debian's ``influxdb``;
  VictoriaMetrics speaks the same endpoint). Readings go to the ``raw`` retention policy, hazards and device
  health to ``events`` (see ``schema.py``).
- ``InfluxV2Writer``: InfluxDB 2.x / 3.x through the official ``influxdb-client`` (bucket + org + token).
  Downsampling there is a bucket/task matter of the server; the sink only writes.

Both raise the same two errors so the sink's retry policy is backend-agnostic:
``TransientWriteError`` (down, slow, overloaded, misconfigured auth: retry, keep the data in Kafka) and
``RejectedWrite`` (the server says these lines are malformed: retrying the same bytes cannot help).
"""

from __future__ import annotations

import gzip
import logging
import re
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

log = logging.getLogger("sitewatch.sink")

READINGS = "readings"  # target: high-volume raw readings
EVENTS = "events"  # target: hazards and device health (low volume, long retention)


class TransientWriteError(RuntimeError):
    """The database did not take the write but may later: retry with backoff."""


class RejectedWrite(ValueError):
    """The database refused the content (parse error). Retrying the same lines will not help."""


@dataclass
class WriteResult:
    points: int
    dropped: int = 0  # acknowledged but not stored (e.g. older than the retention period)
    note: str = ""


class Writer(Protocol):
    """Writes line protocol; returns only once the database has acknowledged it."""

    name: str

    def write(self, lines: list[str], target: str) -> WriteResult: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


_PARTIAL_RE = re.compile(r"dropped=(\d+)")


def _chunks(lines: list[str], size: int):
    for i in range(0, len(lines), size):
        yield lines[i : i + size]


class InfluxV1Writer:
    """InfluxDB 1.x ``POST /write?db=…&rp=…&precision=ms``; credentials via ``u``/``p`` basic auth."""

    name = "influxdb-v1"

    def __init__(
        self,
        url: str,
        db: str = "sitewatch",
        rp_readings: str | None = "raw",
        rp_events: str | None = "events",
        username: str | None = None,
        password: str | None = None,
        chunk_lines: int = 10_000,
        timeout_s: float = 30.0,
        gzip_body: bool = False,
    ):
        self.url = url.rstrip("/")
        self.db = db
        self.rps = {READINGS: rp_readings, EVENTS: rp_events}
        self.chunk_lines = chunk_lines
        self.gzip_body = gzip_body
        auth = (username, password or "") if username else None
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, auth=auth)

    def write(self, lines: list[str], target: str) -> WriteResult:
        res = WriteResult(0)
        for chunk in _chunks(lines, self.chunk_lines):
            r = self._post(chunk, target)
            res.points += r.points
            res.dropped += r.dropped
            res.note = r.note or res.note
        return res

    def _post(self, lines: list[str], target: str) -> WriteResult:
        params = {"db": self.db, "precision": "ms"}
        rp = self.rps.get(target)
        if rp:
            params["rp"] = rp
        body = ("\n".join(lines) + "\n").encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self.gzip_body:
            body = gzip.compress(body, 1)
            headers["Content-Encoding"] = "gzip"
        try:
            resp = self.http.post("/write", params=params, content=body, headers=headers)
        except httpx.HTTPError as e:  # connection refused, reset, timeout
            raise TransientWriteError(f"{type(e).__name__}: {e}") from e
        if resp.status_code == 204:
            return WriteResult(len(lines))
        text = resp.text.strip()
        if resp.status_code == 400 and "partial write" in text and "retention policy" in text:
            m = _PARTIAL_RE.search(text)
            dropped = int(m.group(1)) if m else 0
            return WriteResult(len(lines) - dropped, dropped, text)
        if resp.status_code == 400 and "unable to parse" in text:
            raise RejectedWrite(text[:500])
        # 404 database not found, 401/403 auth, 5xx overload, 429: the data waits in Kafka until fixed
        raise TransientWriteError(f"HTTP {resp.status_code}: {text[:300]}")

    def ping(self) -> bool:
        try:
            return self.http.get("/ping").status_code == 204
        except httpx.HTTPError:
            return False

    def query(self, q: str, db: str | None = None, post: bool = False) -> dict:
        """InfluxQL; ``post`` for statements that change the database."""
        params = {"q": q, "db": db or self.db, "epoch": "ms"}
        resp = self.http.post("/query", data=params) if post else self.http.get("/query", params=params)
        resp.raise_for_status()
        return resp.json()

    def open_episodes(self) -> dict[tuple[str, str, str], int]:
        """(site, device, kind) → opened_ms of hazards whose latest finding is above clear."""
        try:
            data = self.query(
                'SELECT last("level") AS "level", last("opened_ms") AS "opened" FROM '
                f'"{self.rps[EVENTS] or "autogen"}"."hazard" GROUP BY "site", "device", "kind"'
            )
        except (httpx.HTTPError, ValueError):
            return {}
        out = {}
        for res in data.get("results", []):
            for s in res.get("series", []) or []:
                t = s.get("tags", {})
                cols = s["columns"]
                row = s["values"][0]
                level, opened = row[cols.index("level")], row[cols.index("opened")]
                if level and opened is not None:
                    out[(t["site"], t["device"], t["kind"])] = int(opened)
        return out

    def close(self) -> None:
        self.http.close()


class InfluxV2Writer:
    """InfluxDB 2.x/3.x via ``influxdb-client`` (``/api/v2/write``). For 3.x, ``bucket`` is the database."""

    name = "influxdb-v2"

    def __init__(self, url: str, token: str | None, org: str, bucket: str, chunk_lines: int = 10_000,
                 timeout_s: float = 30.0):
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.bucket = bucket
        self.org = org
        self.chunk_lines = chunk_lines
        # retries=False: the sink owns retry/backoff (it must keep Kafka offsets uncommitted meanwhile)
        self.client = InfluxDBClient(url=url, token=token or "", org=org, timeout=int(timeout_s * 1000),
                                     retries=False, enable_gzip=False)
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str], target: str) -> WriteResult:
        from influxdb_client.client.write_api import WritePrecision
        from influxdb_client.rest import ApiException

        n = 0
        for chunk in _chunks(lines, self.chunk_lines):
            try:
                self.api.write(bucket=self.bucket, org=self.org, record=chunk, write_precision=WritePrecision.MS)
            except ApiException as e:
                body = (e.body or "") if isinstance(e.body, str) else str(e.body)
                if e.status == 400 and ("parse" in body or "invalid" in body):
                    raise RejectedWrite(f"HTTP 400: {body[:500]}") from e
                raise TransientWriteError(f"HTTP {e.status}: {body[:300]}") from e
            except Exception as e:  # urllib3 connection / timeout errors
                raise TransientWriteError(f"{type(e).__name__}: {e}") from e
            n += len(chunk)
        return WriteResult(n)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def open_episodes(self) -> dict[tuple[str, str, str], int]:
        return {}  # not recovered on 2.x/3.x: an episode's age restarts at the next finding after a restart

    def close(self) -> None:
        self.client.close()


def make_writer(url: str, *, db: str = "sitewatch", api: str | None = None, username: str | None = None,
                password: str | None = None, token: str | None = None, org: str = "sitewatch",
                bucket: str | None = None, rp_readings: str | None = "raw", rp_events: str | None = "events",
                chunk_lines: int = 10_000) -> InfluxV1Writer | InfluxV2Writer:
    """Pick the backend from ``api`` or the URL scheme.

    ``http(s)://host:8086``            InfluxDB 1.x ``/write`` (default)
    ``influxdb2://host:8086``          InfluxDB 2.x/3.x over http (``influxdb2s://`` for https)
    """
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("influxdb2", "influxdb2s"):
        api = api or "v2"
        url = urlunsplit(("https" if scheme == "influxdb2s" else "http",) + tuple(parts[1:]))
    api = api or "v1"
    if api == "v1":
        return InfluxV1Writer(url, db, rp_readings, rp_events, username, password, chunk_lines)
    if api == "v2":
        return InfluxV2Writer(url, token, org, bucket or db, chunk_lines)
    raise ValueError(f"unknown InfluxDB API {api!r} (v1 or v2)")
