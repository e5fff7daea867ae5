"""An HTTP server on 127.0.0.1 that answers every GET with MPEG-TS that never ends.

The body is a clip repeated forever (no Content-Length, so a reader cannot know where it
stops); each repeat starts its timestamps again, like a looping encoder. It is what a job
input must not be allowed to be held by: only ``jobs.max_duration_s`` (or ``max_bytes``)
ends it.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class EndlessTs:
    """``url`` serves ``payload`` in a loop to any number of clients until ``stop()``."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.requests = 0
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                try:
                    while not outer._stop.is_set():
                        self.wfile.write(outer.payload)
                except OSError:
                    pass  # the reader went away

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/live.ts"

    def start(self) -> EndlessTs:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> EndlessTs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
