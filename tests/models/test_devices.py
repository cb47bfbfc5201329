"""The device resolver (``auto``: CUDA, then Apple's MPS, then the CPU) and the CPU's flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mississippi_tools.errors import InvalidInputError
from mississippi_tools.models.devices import DeviceAvailability, resolve_device, resolve_dtype

NOTHING = DeviceAvailability()
APPLE = DeviceAvailability(mps=True)
NVIDIA = DeviceAvailability(cuda=True)


def test_auto_picks_mps_on_apple_silicon_and_cuda_first_where_both_exist() -> None:
    assert resolve_device("auto", available=APPLE) == torch.device("mps")
    assert resolve_device("auto", available=DeviceAvailability(cuda=True, mps=True)).type == "cuda"
    assert resolve_device("auto", available=NVIDIA) == torch.device("cuda")
    assert resolve_device("auto", available=NOTHING) == torch.device("cpu")


def test_explicit_devices_are_checked_against_what_is_available() -> None:
    assert resolve_device("mps", available=APPLE) == torch.device("mps")
    assert resolve_device("cpu", available=APPLE) == torch.device("cpu")
    with pytest.raises(InvalidInputError, match="Metal \\(MPS\\) is not available"):
        resolve_device("mps", available=NVIDIA)
    with pytest.raises(InvalidInputError, match="CUDA is not available"):
        resolve_device("cuda:0", available=APPLE)


def test_auto_dtype_on_mps_is_float16() -> None:
    assert resolve_dtype("auto", torch.device("mps")) == torch.float16
    assert resolve_dtype("bfloat16", torch.device("mps")) == torch.bfloat16


def test_detect_reports_what_torch_reports() -> None:
    detected = DeviceAvailability.detect()
    assert detected == DeviceAvailability(
        cuda=torch.cuda.is_available(), mps=torch.backends.mps.is_available()
    )
    assert resolve_device("auto") == resolve_device("auto", available=detected)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"), ("DNNL_MAX_CPU_ISA", "AVX2")],
)
def test_kernels_capped_to_avx2_drop_the_wider_flags(variable: str, value: str) -> None:
    # PyTorch reads ATEN_CPU_CAPABILITY once, at import: a fresh interpreter sees the cap.
    code = (
        "from mississippi_tools.models.devices import cpu_features, resolve_dtype\n"
        "import json, torch\n"
        "c = cpu_features()\n"
        "print(json.dumps([list(c.flags), c.native_bfloat16,"
        " str(resolve_dtype('auto', torch.device('cpu')))]))\n"
    )
    env = {**os.environ, variable: value}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    flags, native, dtype = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(flags) <= {"avx2", "avx_vnni"}
    assert native is False and dtype == "torch.float32"
