"""The gateway against the Open Inference Protocol's own REST specification, with Schemathesis.

The specification (``oip_spec/``, with its licence) is fuzzed offline and deterministically, in a
bounded run: every operation, coverage and fuzzing phases, at most ``MAX_EXAMPLES`` cases each,
with Schemathesis's checks: no server error, answers that match the documented schemas and content
types, invalid requests refused with a 4xx, a method a path does not allow answered 405 with
``Allow``, and the rest of its defaults. Two of those checks do not fit any typed model server, and
each run says why it leaves them out.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.e2e import PORT, Gateway, serving

SPEC = Path(__file__).parent / "oip_spec" / "open_inference_rest.yaml"
MAX_EXAMPLES = 25
# A schema-valid request need not be one this model can answer: `inputs: []`, a tensor named ""
# or of datatype "" are valid by the schema and refused 400 by slimgate, as Triton refuses them.
NOT_FOR_A_TYPED_MODEL = "positive_data_acceptance"


@pytest.fixture(scope="module")
def gateway(registry_root, tmp_path_factory):
    """The e2e gateway with the schema's default request limits (the other modules' 4 KiB body
    limit would answer the fuzzer's larger bodies 413, which the specification does not list)."""
    gw = Gateway(f"http://127.0.0.1:{PORT}", tmp_path_factory.mktemp("oip-spec"), registry_root)
    with serving(gw.write_config(limits={}), gw):
        yield gw


def _schemathesis(spec: Path, url: str, tmp_path: Path, exclude: list[str], params: dict[str, str]) -> str:
    config = tmp_path / f"schemathesis-{len(params)}.toml"
    config.write_text("[parameters]\n" + "".join(f'"path.{k}" = "{v}"\n' for k, v in params.items()))
    args = [
        *(["--config-file", str(config)] if params else []),
        "run",
        str(spec),
        "--url",
        url,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",  # the same cases on every machine, and no example database
        "--request-timeout",
        "10",
        "--exclude-checks",
        ",".join(exclude),
        "--no-color",
    ]
    st = Path(sys.executable).with_name("st")
    done = subprocess.run([str(st), *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    return done.stdout


def _spec(tmp_path: Path) -> Path:
    # The file writes path templates as `${MODEL_NAME}`; OpenAPI's are `{MODEL_NAME}` (with the `$`
    # kept, every generated path would start its model name with one).
    out = tmp_path / SPEC.name
    out.write_text(SPEC.read_text(encoding="utf-8").replace("${", "{"), encoding="utf-8")
    return out


def test_any_model_name_or_version_gets_only_documented_shapes_and_no_server_error(gateway, tmp_path):
    # The specification documents only 200 for the model operations, while its prose says a failed
    # request gets an error status; slimgate answers 404 for a model it does not serve, as KServe does.
    out = _schemathesis(
        _spec(tmp_path), gateway.url, tmp_path, [NOT_FOR_A_TYPED_MODEL, "status_code_conformance"], {}
    )
    assert "6 selected / 6 total" in out and "generated" in out


def test_the_served_model_conforms_to_the_specification(gateway, tmp_path):
    meta = gateway.client.get("/v2/models/slimgate").json()
    params = {"MODEL_NAME": meta["name"], "MODEL_VERSION": meta["versions"][0]}
    out = _schemathesis(_spec(tmp_path), gateway.url, tmp_path, [NOT_FOR_A_TYPED_MODEL], params)
    assert "6 selected / 6 total" in out and "generated" in out
