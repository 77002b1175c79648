"""Errors a caller is told about, and the admin token check, shared by the gateway and the controller.

**Errors.** Every refusal is an :class:`ApiError` carrying its HTTP status and a stable code; a
domain error that a caller may cause (an unknown candidate, a transition its phase forbids, an
unreachable Ray cluster) subclasses :class:`Refusal` and names its status and code once, where it
is defined. :func:`render` is the one place an exception becomes a response: anything that is not
an ``ApiError`` is a bare 500 ``internal`` whose body carries no detail (the detail goes to the
log). Bodies are ``{"error": {"code", "message"}}``, except under ``/v2``, where the Open
Inference Protocol's shape ``{"error": "<message>"}`` is used.

**Auth.** :func:`resolve_admin_token` is the one reading of the admin token (``$admin.token_env``
first, then the inline ``admin.token``), and :class:`AdminToken` the one bearer check, constant
time. Framework-free: the gateway (Starlette) and the controller (``http.server``) both call it.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from serving.config import AdminConfig

log = logging.getLogger("slimgate")

OIP_PREFIX = "/v2"


class ApiError(Exception):
    """A refusal the caller is told about: HTTP ``status``, machine-readable ``code``, ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class MethodNotAllowed(ApiError):
    """405, with the methods the path does allow (RFC 9110 requires them in ``Allow``)."""

    def __init__(self, method: str, path: str, allowed: list[str]) -> None:
        super().__init__(405, "method_not_allowed", f"{method} is not allowed on {path}")
        self.allowed = sorted(set(allowed))


class Refusal(ApiError):
    """A domain error with a fixed status and code (class attributes), raised with a message only."""

    status_code: ClassVar[int] = 400
    error_code: ClassVar[str] = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(self.status_code, self.error_code, message)


INTERNAL_MESSAGE = "internal error"


def as_api_error(err: BaseException, where: str = "", logger: logging.Logger | None = None) -> ApiError:
    """``err`` as what the caller is told: itself if it is an ApiError, else a detail-free 500.

    The detail goes to ``logger`` (in a Ray Serve replica, pass ``ray.serve``'s logger, which
    Ray writes to the replica's log).
    """
    if isinstance(err, ApiError):
        return err
    (logger or log).error("%s failed", where or "request", exc_info=err)
    return ApiError(500, "internal", INTERNAL_MESSAGE)


def render(
    err: BaseException, path: str = "", retry_after_s: int | None = None, logger: logging.Logger | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and JSON body answering ``err`` on ``path``."""
    api = as_api_error(err, path, logger)
    body: Any = {"error": api.message} if path.startswith(OIP_PREFIX) else api.body()
    headers: dict[str, str] = {}
    if api.status == 401:
        headers["www-authenticate"] = "Bearer"
    if isinstance(api, MethodNotAllowed):
        headers["allow"] = ", ".join(api.allowed)
    if retry_after_s is not None:
        headers["retry-after"] = str(retry_after_s)
    return api.status, headers, orjson.dumps(body)


def resolve_admin_token(admin: AdminConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The admin token: ``$token_env`` if set and non-empty, else the inline ``token``; None if neither."""
    env = os.environ if environ is None else environ
    value = (env.get(admin.token_env) or "").strip()
    if value:
        return value
    inline = admin.token.get_secret_value().strip() if admin.token is not None else ""
    return inline or None


class AdminToken:
    """The admin token a config resolves to, and the bearer check of a request's Authorization header."""

    def __init__(self, token: str | None, token_env: str) -> None:
        self.token = token
        self.token_env = token_env

    @classmethod
    def of(cls, admin: AdminConfig, environ: Mapping[str, str] | None = None) -> AdminToken:
        return cls(resolve_admin_token(admin, environ), admin.token_env)

    def check(self, authorization: str | None) -> None:
        """Refuse (401) unless ``authorization`` is ``Bearer <the token>``."""
        if self.token is None:
            raise ApiError(
                401, "admin_disabled", f"admin API disabled: no token configured (set ${self.token_env})"
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "admin endpoints need 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ApiError(401, "unauthorized", "invalid admin token")
