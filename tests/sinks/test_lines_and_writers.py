"""Line building (shared by both backends) and the two writers' wire behaviour.

InfluxDB 2.x/3.x cannot run here, so the v2 writer is exercised against a local HTTP server that answers
``/api/v2/write`` like InfluxDB does; it checks what influxdb-client actually sends (path, org, bucket,
precision, token, body) and how errors map onto retry / reject."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.sinks.influx import Sink, SinkOptions
from streams.sinks.lineproto import LineBuilder
from streams.sinks.writers import (InfluxV1Writer, InfluxV2Writer, RejectedWrite, TransientWriteError,
                                   make_writer)


def test_reading_lines_tags_escaping_and_non_finite():
    b = LineBuilder({"cz 1": "a,b=c"})
    batch = b.readings([{"site": "cz 1", "device": "tc=1", "family": "crane", "m": ["load", "moment", "load"],
                         "ts": [1000, 1000, 2000], "val": [1.5, float("nan"), 1e-7]}])
    assert batch.readings == [
        r"reading,company=a\,b\=c,device=tc\=1,family=crane,metric=load,site=cz\ 1 value=1.5 1000",
        r"reading,company=a\,b\=c,device=tc\=1,family=crane,metric=load,site=cz\ 1 value=1e-07 2000",
    ]
    assert batch.skipped == ["1 non-finite reading value(s) (line protocol cannot carry NaN/inf)"]


def test_bad_records_are_reported_not_fatal():
    b = LineBuilder()
    batch = b.build([{"type": "readings", "site": "s", "device": "d", "family": "pit", "m": ["a"], "ts": [1],
                      "val": [2.0]},
                     {"type": "readings", "site": "s"},  # malformed
                     {"type": "mystery"}],
                    [{"site": "s"}])
    assert batch.readings == ["reading,device=d,family=pit,metric=a,site=s value=2.0 1"]
    assert len(batch.skipped) == 3


def test_make_writer_by_scheme():
    assert isinstance(make_writer("http://127.0.0.1:8086"), InfluxV1Writer)
    w = make_writer("influxdb2://127.0.0.1:8086", token="t", org="o", bucket="b")
    assert isinstance(w, InfluxV2Writer)
    w.close()
    with pytest.raises(ValueError):
        make_writer("http://x", api="v9")


class FakeV2(BaseHTTPRequestHandler):
    requests: list = []
    status = 204
    body = b""

    def do_POST(self):  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        FakeV2.requests.append((self.path, dict(self.headers), self.rfile.read(n)))
        self.send_response(FakeV2.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(FakeV2.body)))
        self.end_headers()
        self.wfile.write(FakeV2.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_v2():
    FakeV2.requests, FakeV2.status, FakeV2.body = [], 204, b""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeV2)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"influxdb2://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_v2_writer_request(fake_v2):
    w = make_writer(fake_v2, token="tok-123", org="city", bucket="sitewatch", chunk_lines=2)
    lines = LineBuilder().readings([{"site": "s", "device": "d", "family": "pit", "m": ["a", "b", "c"],
                                     "ts": [1, 2, 3], "val": [1.0, 2.0, 3.0]}]).readings
    assert w.write(lines, "readings").points == 3
    assert len(FakeV2.requests) == 2  # chunked
    path, headers, body = FakeV2.requests[0]
    assert path.startswith("/api/v2/write?")
    assert set(path.split("?", 1)[1].split("&")) == {"org=city", "bucket=sitewatch", "precision=ms"}
    assert headers["Authorization"] == "Token tok-123"
    assert body.decode().split("\n") == lines[:2]
    w.close()


def test_v2_writer_error_mapping(fake_v2):
    w = make_writer(fake_v2, token="t", org="o", bucket="b")
    FakeV2.status, FakeV2.body = 503, b'{"code":"unavailable","message":"busy"}'
    with pytest.raises(TransientWriteError):
        w.write(["m v=1 1"], "readings")
    FakeV2.status, FakeV2.body = 400, b'{"code":"invalid","message":"unable to parse line"}'
    with pytest.raises(RejectedWrite):
        w.write(["m v=1 1"], "readings")
    w.close()


def test_v1_down_is_transient():
    w = InfluxV1Writer("http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(TransientWriteError):
        w.write(["m v=1 1"], "readings")


@pytest.mark.integration
def test_rejected_lines_are_isolated_and_the_rest_written(influx):
    """A line the database cannot parse is found by bisection and logged; its neighbours are written."""
    import time

    from streams.sinks.schema import init_database

    w = InfluxV1Writer(influx.url)
    init_database(w, "sitewatch")
    sink = Sink(w, SinkOptions())
    t0 = (int(time.time()) - 60) * 1000
    good = [f"reading,device=d,family=pit,metric=m,site=s value={i}.0 {t0 + i}" for i in range(9)]
    lines = good[:4] + ['reading,device=d value="unterminated 1'] + good[4:]
    sink._write_isolating(lines, "readings")
    assert sink.stats.skipped == 1
    assert [r["value"] for r in influx.rows('SELECT "value" FROM "raw"."reading"')] == [float(i) for i in range(9)]
    w.close()
