"""A pull-through package mirror on the node's bridge address, as operators run one inside their
network: plain HTTP to pods, HTTPS upstream from the host. `/go/` serves the Go module proxy's
protocol, `/npm/` the npm registry's and `/maven/` Maven Central's, each passed through to the
public registry; every path asked for is recorded, so a test sees which requests a build sent
to the mirror."""

from __future__ import annotations

import http.server
import time
import urllib.error
import urllib.request

from testbed.relay import Server

UPSTREAMS = {
    "go": "https://proxy.golang.org",
    "npm": "https://registry.npmjs.org",
    "maven": "https://repo.maven.apache.org/maven2",
}
# Headers of the client's request the registries answer by (npm's abbreviated metadata).
PASSED_ON = ("Accept", "Accept-Encoding", "User-Agent")
REQUEST_SECONDS = 60
ATTEMPTS = 3


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Mirror
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._relay("GET")

    def do_HEAD(self) -> None:
        """Maven asks whether an artifact exists before it trusts a copy it already has."""
        self._relay("HEAD")

    def _relay(self, method: str) -> None:
        kind, _, rest = self.path.lstrip("/").partition("/")
        upstream = UPSTREAMS.get(kind)
        if upstream is None:
            self._answer(404, b"no such mirror\n", {}, method)
            return
        self.server.requests.append(self.path)
        headers = {name: self.headers[name] for name in PASSED_ON if self.headers[name]}
        # https only: the upstreams above.
        request = urllib.request.Request(  # noqa: S310
            f"{upstream}/{rest}", headers=headers, method=method
        )
        status, body, kept = _fetch(request)
        self._answer(status, body, kept, method)

    def _answer(self, status: int, body: bytes, headers: dict[str, str], method: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the requests are recorded instead."""


def _fetch(request: urllib.request.Request) -> tuple[int, bytes, dict[str, str]]:
    """The registry's answer; a failed connection is tried again, as a mirror would, before
    the build is told 502."""
    failure: OSError | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(1)
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:  # noqa: S310
                kept = {
                    name: response.headers[name]
                    for name in ("Content-Type", "Content-Encoding")
                    if response.headers[name]
                }
                return response.status, response.read(), kept
        except urllib.error.HTTPError as error:
            return error.code, error.read(), {}
        except OSError as error:
            failure = error
    return 502, f"{failure}\n".encode(), {}


class Mirror(Server):
    def __init__(self, address: str) -> None:
        super().__init__(address, _Handler)
        self.requests: list[str] = []

    def url(self, kind: str) -> str:
        return f"http://{self.server_address[0]!s}:{self.port}/{kind}"
