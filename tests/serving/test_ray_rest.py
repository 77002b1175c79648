"""Ray's REST API client: the dashboard token it sends, and the token file it leaves its owner's."""

from __future__ import annotations

import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving import ray_rest


def test_rays_token_file_is_sent_and_made_its_owners_alone(tmp_path, monkeypatch):
    seen: list[str | None] = []

    class Dashboard(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server interface
            seen.append(self.headers.get("authorization"))
            body = json.dumps({"applications": {}}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    token = tmp_path / "auth_token"
    token.write_text("s3cret\n")
    token.chmod(0o644)  # as Ray writes it
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Dashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert ray_rest.status(f"http://127.0.0.1:{server.server_address[1]}") == {"applications": {}}
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer s3cret"]
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
