"""The device's peak FLOP/s that MFU divides by, by device name and precision.

Composer 0.32.1's SpeedMonitor knows a few names (``get_gpu_flops_available``): an H100 NVL, H800 or any name it
does not match gets no peak, and MFU silently disappears from the logs. This table is looked at first; Composer's
is the fallback; ``peak_flops=`` overrides both. Figures are dense (no 2:4 sparsity), per GPU, from NVIDIA's
datasheets, for the two precisions we train in.
"""
from __future__ import annotations

from typing import Optional

# (substrings that must all be in the lower-cased torch.cuda.get_device_name(), {precision: FLOP/s}); first match
# wins, so the more specific names come first.
H100_SXM = {"fp32": 67e12, "amp_bf16": 989.5e12}
H100_PCIE = {"fp32": 51e12, "amp_bf16": 756.5e12}
PEAKS: tuple[tuple[tuple[str, ...], dict[str, float]], ...] = (
    (("gh200",), H100_SXM),                       # Grace Hopper: the H100 SXM's Tensor Cores
    (("h200",), H100_SXM),                        # H200 SXM / NVL: the same compute, more memory
    (("h100", "nvl"), {"fp32": 60e12, "amp_bf16": 835.5e12}),
    (("h100", "pcie"), H100_PCIE),
    (("h100", "hbm2e"), H100_PCIE),
    (("h100",), H100_SXM),                        # "H100 80GB HBM3" and other SXM names
    (("h800", "pcie"), H100_PCIE),
    (("h800",), H100_SXM),
    (("b200",), {"fp32": 80e12, "amp_bf16": 2.25e15}),
    (("a100",), {"fp32": 19.5e12, "amp_bf16": 312e12}),
    (("l40s",), {"fp32": 91.6e12, "amp_bf16": 362.05e12}),
    (("l4",), {"fp32": 30.3e12, "amp_bf16": 121e12}),
    (("a10",), {"fp32": 31.2e12, "amp_bf16": 125e12}),
)


def table_peak(device_name: str, precision: str) -> Optional[float]:
    """Our table's peak for this device name and precision, or None when it has none."""
    name = device_name.lower()
    for needles, peaks in PEAKS:
        if all(n in name for n in needles):
            return peaks.get(precision)
    return None


def resolve_peak(configured: Optional[float], device: str, precision: str) -> tuple[Optional[float], str]:
    """(the peak SpeedMonitor gets, where it came from: printed once at start). None lets Composer look it up."""
    if configured is not None:
        return configured, f"{configured:.4g} FLOP/s (peak_flops)"
    if device != "gpu":
        return None, "none on CPU: MFU not reported (set peak_flops=FLOP/s to report it)"
    import torch

    name = torch.cuda.get_device_name()
    peak = table_peak(name, precision)
    if peak is not None:
        return peak, f"{peak:.4g} FLOP/s ({name}, {precision}; training/peak_flops.py)"
    return None, f"Composer's table for {name} ({precision}); if MFU is missing, set peak_flops=FLOP/s"
