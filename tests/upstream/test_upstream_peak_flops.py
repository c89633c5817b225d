"""MFU's peak by device name: ours first (Composer 0.32.1 misses H100 NVL, H800...), Composer's as fallback."""
from __future__ import annotations

import pytest
from composer.callbacks.speed_monitor import get_gpu_flops_available

from core.peaks import PEAKS, table_peak
from upstream.composer import resolve_peak


class _State:
    """What Composer's lookup reads: the precision."""

    class precision:  # noqa: N801 - mirrors State.precision.value
        value = "amp_bf16"


@pytest.mark.parametrize("name", ["NVIDIA H100 NVL", "NVIDIA H800", "NVIDIA H800 PCIe", "NVIDIA B200",
                                  "NVIDIA L40S"])
def test_upstream_table_has_no_peak_for_these_names(name, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the name is all Composer looks at
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    with pytest.warns(UserWarning, match="so MFU cannot be calculated"):
        assert get_gpu_flops_available(_State()) == 0
    assert table_peak(name, "amp_bf16") > 0


@pytest.mark.parametrize("name, precision, peak", [
    ("NVIDIA H100 80GB HBM3", "amp_bf16", 989.5e12),
    ("NVIDIA H100 PCIe", "amp_bf16", 756.5e12),
    ("NVIDIA H100 NVL", "amp_bf16", 835.5e12),
    ("NVIDIA H800", "fp32", 67e12),
    ("NVIDIA GH200 480GB", "amp_bf16", 989.5e12),
    ("NVIDIA H200", "amp_bf16", 989.5e12),
    ("NVIDIA A100-SXM4-80GB", "amp_bf16", 312e12),
    ("NVIDIA L4", "amp_bf16", 121e12),
    ("NVIDIA H100 80GB HBM3", "amp_fp16", 989.5e12),  # fp16's dense peak is bf16's on every GPU of the table
    ("NVIDIA A100-SXM4-80GB", "amp_fp16", 312e12),
])
def test_table_peaks_by_name(name, precision, peak):
    assert table_peak(name, precision) == peak


def test_unknown_name_falls_back_to_composer_and_every_entry_has_both_precisions():
    assert table_peak("Tesla T4", "amp_bf16") is None
    assert all(set(peaks) == {"fp32", "amp_bf16"} for _, peaks in PEAKS)


def test_configured_peak_wins_and_cpu_says_mfu_is_off():
    assert resolve_peak(1e12, "cpu", "fp32") == (1e12, "1e+12 FLOP/s (peak_flops)")
    peak, source = resolve_peak(None, "cpu", "fp32")
    assert peak is None and source.startswith("none on CPU: MFU not reported (set peak_flops=")
