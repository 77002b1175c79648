"""Talking to a running gateway's Ray cluster: deploy a Serve config, read status, wait for it.

Uses Ray's Serve REST API on the dashboard (loopback by default), the same declarative path
``serve deploy`` and KubeRay use, so a lightweight change is applied in place by Ray itself.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from serving.errors_and_auth import Refusal

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
API = "/api/serve/applications/"


class ControlError(Refusal, RuntimeError):
    """The Ray cluster could not be reached or refused a request."""

    status_code = 503
    error_code = "gateway_unreachable"


def _ray_auth_headers() -> dict[str, str]:
    """Ray's dashboard token, when the cluster uses token authentication (Ray's default since 2.5x).

    Ray keeps it in ``$RAY_AUTH_TOKEN`` or ``~/.ray/auth_token`` (``$RAY_AUTH_TOKEN_PATH``).
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        if path.is_file():
            _owner_only(path)
            token = path.read_text().strip()
    return {"authorization": f"Bearer {token}"} if token else {}


def _owner_only(path: Path) -> None:
    # Ray writes its token file 0644: any local user could then drive the cluster. Its owner's
    # token is made its owner's alone before slimgate uses it.
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        path.chmod(0o600)


def _request(method: str, url: str, body: dict | None = None, timeout: float = 30.0) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json", **_ray_auth_headers()}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as err:
        raise ControlError(
            f"{method} {url}: HTTP {err.code}: {err.read().decode(errors='replace')[:2000]}"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        raise ControlError(
            f"cannot reach the Ray dashboard at {url} ({err}); is the gateway running?"
        ) from None
    return json.loads(raw) if raw.strip() else None


def status(dashboard: str = DEFAULT_DASHBOARD) -> dict[str, Any]:
    return _request("GET", dashboard.rstrip("/") + API)


def deploy(serve_cfg: dict[str, Any], dashboard: str = DEFAULT_DASHBOARD) -> None:
    _request("PUT", dashboard.rstrip("/") + API, serve_cfg)


def _landed(sent: dict[str, Any], state: dict[str, Any]) -> bool:
    """Ray reports the config it is working towards; until it shows ours, its status is stale."""
    deployed = state.get("deployed_app_config") or {}
    if deployed.get("args", {}) != sent.get("args", {}):
        return False
    got = {d.get("name"): d for d in deployed.get("deployments", [])}
    return all(
        got.get(d["name"], {}).get("user_config") == d.get("user_config") for d in sent.get("deployments", [])
    )


def wait_running(
    serve_cfg: dict[str, Any], dashboard: str = DEFAULT_DASHBOARD, timeout_s: float = 300.0
) -> dict[str, Any]:
    """Poll until Ray runs exactly ``serve_cfg``: every app RUNNING and every deployment HEALTHY."""
    sent = {a["name"]: a for a in serve_cfg["applications"]}
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = status(dashboard)
        states = {name: (last.get("applications") or {}).get(name, {}) for name in sent}
        failed = {
            n: s.get("message", "")
            for n, s in states.items()
            if s.get("status") in ("DEPLOY_FAILED", "UNHEALTHY")
        }
        if failed:
            raise ControlError(
                "deployment failed: " + "; ".join(f"{n}: {m[:500]}" for n, m in failed.items())
            )
        done = all(
            _landed(sent[name], s)
            and s.get("status") == "RUNNING"
            and all(d.get("status") == "HEALTHY" for d in (s.get("deployments") or {}).values())
            for name, s in states.items()
        )
        if done:
            return last
        time.sleep(0.5)
    raise ControlError(f"timed out after {timeout_s:.0f}s waiting for {sorted(sent)} to be RUNNING")
