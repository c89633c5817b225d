"""bench/modern_recipe.py cannot rot: its CPU smoke run (a tiny model, 12 steps, each recipe once) trains all three
recipes through the real trainer and prints the comparison."""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.helpers import PYTHON, REPO, train_env

pytestmark = pytest.mark.slow  # three training runs


def test_cpu_smoke_trains_the_three_recipes_and_reports_time_to_loss(tmp_path):
    proc = subprocess.run([PYTHON, str(REPO / "bench" / "modern_recipe.py"), "--cpu-smoke"], cwd=tmp_path,
                          env=train_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    target = float(re.search(r"target: plain's best final val loss after 12 steps = ([\d.]+)", proc.stdout).group(1))
    rows = {m.group(1): m for m in re.finditer(r"^(plain|muon-only|modern)\s+(\S+)\s+([\d.]+)\s", proc.stdout, re.M)}
    assert sorted(rows) == ["modern", "muon-only", "plain"]
    assert float(rows["plain"].group(3)) == pytest.approx(target, abs=1e-4)  # plain's own final val is the target
    assert re.search(r"^plain\s+\S+\s+[\d.]+\s+\d+\s+[\d.]+\s", proc.stdout, re.M)  # reaches its own loss
    assert re.search(r"^modern / plain time to the target: ([\d.]+|never reached)$", proc.stdout, re.M)
    assert re.search(r"^goal modern / plain <= 0.5: (ok|MISSED)$", proc.stdout, re.M)
