"""Dense peak FLOP/s per GPU model, from NVIDIA's datasheets, for the two precisions we train in: what MFU is
measured against (training, via upstream/composer.py's ``resolve_peak``, and bench/gpu_check.py, which runs
without Composer). Pure Python on purpose.
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


SAME_PEAK = {"amp_fp16": "amp_bf16"}  # every GPU above has the same dense fp16 and bf16 Tensor Core peak


def table_peak(device_name: str, precision: str) -> Optional[float]:
    """Our table's peak for this device name and precision, or None when it has none."""
    name = device_name.lower()
    for needles, peaks in PEAKS:
        if all(n in name for n in needles):
            return peaks.get(SAME_PEAK.get(precision, precision))
    return None
