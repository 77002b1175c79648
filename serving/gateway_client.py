"""Asking a running gateway what its router replicas loaded (used by ``slimgate apply``).

A variant placed in the router is loaded by every router replica while Ray applies the new
config; a load that fails does not fail the replica (the rest of the gateway keeps serving), so
Ray reports the apply as done either way. :func:`confirm_loaded` asks the gateway itself, through
the inference protocol's public model metadata, whether each such variant now serves the version
the config pins, and says why not when the admin token is at hand.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from serving.config import GatewayConfig
from serving.ray_env import is_loopback

_WILDCARDS = ("0.0.0.0", "::", "")


def gateway_url(cfg: GatewayConfig, dashboard: str) -> str:
    """Where this machine reaches the gateway: its configured host, else the dashboard's host."""
    host = cfg.http.host
    if host in _WILDCARDS or is_loopback(host):
        host = urlparse(dashboard).hostname or "127.0.0.1"
    return f"http://{host}:{cfg.http.port}"


def _get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, dict]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"{}")
        except ValueError:
            return err.code, {}
    except (urllib.error.URLError, OSError, ValueError):
        return 0, {}


def confirm_loaded(
    cfg: GatewayConfig, keys: set[str], base_url: str, token: str | None = None, timeout_s: float = 30.0
) -> dict[str, str]:
    """The variants of ``keys`` that do not serve their pinned version, with why (empty: all loaded)."""
    wanted = {k: cfg.variants[k].version for k in keys}
    missing: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        missing = {}
        for key, version in sorted(wanted.items()):
            status, body = _get(f"{base_url}/v2/models/{key}")
            served = (body.get("versions") or [None])[0] if status == 200 else None
            if served != str(version):
                missing[key] = f"serves version {served}" if served else "is not ready"
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if missing and token:
        status, body = _get(f"{base_url}/admin/config", token)
        if status == 200:
            for key in missing:
                why = (body.get("variants") or {}).get(key, {}).get("load_error")
                if why:
                    missing[key] += f": {why}"
    return missing
