"""``slimgate serve`` refuses a config whose GPU variants this host cannot place (serving.config.host)."""

from __future__ import annotations

import pytest

from serving.config import ConfigError, check_host_gpus, gpu_variants, parse_config
from variants.hardware import cuda_unavailable_reason


def _config(**canary) -> dict:
    return {
        "variants": {
            "stable": {"ref": "student-int8@1"},
            "canary": {"ref": "teacher-cuda-fp16@1", "placement": "deployment", **canary},
        },
        "routing": {"stable": "stable", "weights": {"stable": 90, "canary": 10}},
    }


GPU = _config(device="cuda", resources={"num_gpus": 0.5})


def test_gpu_variants_are_those_whose_replicas_ask_ray_for_a_gpu():
    assert gpu_variants(parse_config(GPU)) == {"canary": 0.5}
    assert gpu_variants(parse_config(_config())) == {}


@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="this machine has a CUDA device")
def test_serve_refuses_gpu_variants_on_this_host_without_a_gpu():
    with pytest.raises(ConfigError) as info:
        check_host_gpus(parse_config(GPU))
    msg = str(info.value)
    assert "variants.canary.resources.num_gpus: asks for 0.5 GPU per replica, but this host has none" in msg
    assert cuda_unavailable_reason() in msg and "variants.stable" not in msg


def test_a_cpu_only_config_is_not_probed_on_a_host_without_a_gpu():
    def probe() -> str | None:
        raise AssertionError("a config without GPU variants must not ask for a GPU")

    check_host_gpus(parse_config(_config()), probe)


def test_gpu_variants_pass_with_a_fake_gpu_probe_saying_one_is_there():
    # The only fake here: this machine has no GPU to say "yes".
    check_host_gpus(parse_config(GPU), lambda: None)
    with pytest.raises(ConfigError, match="this host has none \\(no driver\\)"):
        check_host_gpus(parse_config(GPU), lambda: "no driver")
