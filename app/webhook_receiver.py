"""A small local webhook receiver: the demo's stand-in for a safety officer's phone, and the tests' real
HTTP endpoint. Verifies the HMAC signature when given the secret, records what arrived and when.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
    at_ms: int
    signature_ok: bool | None


@dataclass
class WebhookReceiver:
    """Serve on 127.0.0.1:<port>. Outage simulation: ``fail_next`` makes the next N requests answer 500,
    ``fail_for(seconds)`` every request for a window of time; ``delay_s`` holds every answer that long (a slow
    receiver, so a sender can be killed while its request is in flight)."""

    port: int = 0
    secret: str | None = None
    on_alert: Callable[[Received], None] | None = None
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_until: float = 0.0  # time.monotonic() before which every request answers 500
    delay_s: float = 0.0
    requests: int = 0
    refused: int = 0  # requests answered 500

    def __post_init__(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do: senders may reuse the connection

            def do_POST(self):  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                receiver.requests += 1
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if receiver.fail_next > 0 or time.monotonic() < receiver.fail_until:
                    receiver.fail_next = max(0, receiver.fail_next - 1)
                    receiver.refused += 1
                    self.send_response(500)
                    self.send_header("Content-Length", "0")  # HTTP/1.1: or the sender reads until close
                    self.end_headers()
                    return
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                sig_ok = None
                if receiver.secret:
                    want = "sha256=" + hmac.new(receiver.secret.encode(), raw, hashlib.sha256).hexdigest()
                    sig_ok = hmac.compare_digest(want, self.headers.get("X-SiteWatch-Signature", ""))
                rec = Received(body, dict(self.headers), int(time.time() * 1000), sig_ok)
                receiver.received.append(rec)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if receiver.on_alert:
                    receiver.on_alert(rec)

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def fail_for(self, seconds: float) -> None:
        """Answer 500 to everything for the next ``seconds`` (a receiver outage of known length)."""
        self.fail_until = time.monotonic() + seconds

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
