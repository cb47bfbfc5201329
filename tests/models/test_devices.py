"""The device resolver: ``auto`` prefers CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

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
