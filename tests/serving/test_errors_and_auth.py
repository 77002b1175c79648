"""The shared errors and auth: one token resolution, one bearer check, one rendering of errors."""

from __future__ import annotations

import orjson
import pytest

from serving.config import load_config
from serving.controller.candidate import InvalidTransition
from serving.controller.runner import NotACandidate
from serving.errors_and_auth import AdminToken, ApiError, render, resolve_admin_token
from serving.ray_rest import ControlError


def _admin(**changes):
    return load_config().with_changes({f"admin.{k}": v for k, v in changes.items()}).admin


def test_admin_token_resolution_prefers_the_environment():
    admin = _admin(token="inline-token")
    assert resolve_admin_token(admin, {}) == "inline-token"
    assert resolve_admin_token(admin, {"SLIMGATE_ADMIN_TOKEN": "from-env"}) == "from-env"
    assert resolve_admin_token(admin, {"SLIMGATE_ADMIN_TOKEN": "  "}) == "inline-token"
    none = _admin(token_env="GW_TOKEN")
    assert resolve_admin_token(none, {}) is None
    assert resolve_admin_token(none, {"GW_TOKEN": "t"}) == "t"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "unauthorized"),
        ("Basic abc", "unauthorized"),
        ("Bearer ", "unauthorized"),
        ("Bearer no", "unauthorized"),
    ],
)
def test_bearer_check_refuses_what_is_not_the_token(header, code):
    with pytest.raises(ApiError) as err:
        AdminToken("right", "SLIMGATE_ADMIN_TOKEN").check(header)
    assert (err.value.status, err.value.code) == (401, code)
    AdminToken("right", "SLIMGATE_ADMIN_TOKEN").check("bearer right")  # the scheme is case-insensitive


def test_no_token_disables_the_admin_api_and_names_the_variable():
    with pytest.raises(ApiError, match=r"set \$GW_TOKEN") as err:
        AdminToken.of(_admin(token_env="GW_TOKEN"), {}).check("Bearer anything")
    assert err.value.code == "admin_disabled"


def test_domain_errors_carry_their_status_and_code():
    for exc, status, code in [
        (NotACandidate("x"), 404, "not_a_candidate"),
        (InvalidTransition("x"), 409, "invalid_transition"),
        (ControlError("x"), 503, "gateway_unreachable"),
    ]:
        got, headers, body = render(exc)
        assert (got, orjson.loads(body)) == (status, {"error": {"code": code, "message": "x"}})


def test_an_unexpected_error_is_a_bare_500_without_detail():
    status, _, body = render(KeyError("/secret/path/model.onnx"), "/v1/predict")
    assert status == 500 and orjson.loads(body) == {
        "error": {"code": "internal", "message": "internal error"}
    }
    assert b"KeyError" not in body and b"secret" not in body


def test_oip_paths_get_the_protocol_error_shape_and_401_names_the_scheme():
    status, headers, body = render(ApiError(401, "unauthorized", "no"), "/v2/models/x/infer", retry_after_s=2)
    assert status == 401 and orjson.loads(body) == {"error": "no"}
    assert headers == {"www-authenticate": "Bearer", "retry-after": "2"}
