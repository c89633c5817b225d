"""eval.py --hellaswag against lm-evaluation-harness (the community's yardstick), item by item: the same export of a
trained run, scored by eval.py and by the harness's own ``hf`` model through a local multiple-choice task that reads
the same jsonl. Both must pick the same ending under acc and acc_norm for every item, and every ending's
log-likelihood must be minus our summed loss. Offline: nothing is downloaded (the task reads a local file)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from evaluation.harness import write_task
from tests.evaluation.test_eval import HELLASWAG, dataset, eval_error, eval_json, run  # noqa: F401 (fixtures)
from tests.helpers import REPO

LMEVAL_PYTHON = REPO / ".venv-lmeval" / "bin" / "python"  # lm-eval beside the project's packages (Makefile)
TASK = "parity_mc"
HARNESS = """\
import json, sys
import lm_eval
from lm_eval.tasks import TaskManager
export, tasks, task, out = sys.argv[1:]
result = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={export},dtype=float32", device="cpu",
                                 batch_size=1, tasks=[task], task_manager=TaskManager(include_path=tasks),
                                 log_samples=True)
samples = sorted(result["samples"][task], key=lambda s: s["doc_id"])
keep = ("doc_id", "target", "acc", "acc_norm", "filtered_resps")
with open(out, "w") as f:
    json.dump([{k: s[k] for k in keep} for s in samples], f, default=str)
"""


def harness_samples(export: Path, items: Path, tmp: Path) -> list[dict]:
    """lm-evaluation-harness's per-item records (``log_samples``) for ``items`` under its ``hf`` model, in order:
    run by LMEVAL_PYTHON (its own venv: lm-eval's dependencies would slow every Composer start in ours)."""
    assert LMEVAL_PYTHON.is_file(), f"{LMEVAL_PYTHON} missing: `make test` creates it (make lmeval-venv)"
    tasks = tmp / "tasks"
    tasks.mkdir()
    write_task(tasks, TASK, items, tmp / "datasets-cache")
    out = tmp / "harness.json"
    proc = subprocess.run([str(LMEVAL_PYTHON), "-c", HARNESS, str(export), str(tasks), TASK, str(out)],
                          env=os.environ.copy(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_eval_hellaswag_matches_lm_evaluation_harness_item_by_item(run, tmp_path, capsys, hf_offline,  # noqa: F811
                                                                   monkeypatch):
    import export_hf

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # nothing of the harness's lands in the user's cache
    export = tmp_path / "hf"
    assert export_hf.main([str(run), str(export)]) == 0
    capsys.readouterr()
    lines = HELLASWAG.read_text().splitlines()
    assert any(json.loads(line)["ctx"] != json.loads(line)["ctx"].rstrip() for line in lines)  # whitespace moves
    ours_file = tmp_path / "ours.jsonl"
    report = eval_json(capsys, export, "--hellaswag", HELLASWAG, "--per-item", ours_file)
    ours = [json.loads(line) for line in ours_file.read_text().splitlines()]
    theirs = harness_samples(export, HELLASWAG, tmp_path)
    assert len(ours) == len(theirs) == report["items"] == len(lines)
    for mine, sample in zip(ours, theirs):
        loglik = [float(ll) for ll, _greedy in sample["filtered_resps"]]
        assert [-loss for loss in mine["losses"]] == pytest.approx(loglik, abs=1e-4), sample["doc_id"]
        assert (mine["label"], mine["acc"] == mine["label"], mine["acc_norm"] == mine["label"]) == \
            (sample["target"], bool(sample["acc"]), bool(sample["acc_norm"])), sample["doc_id"]
    for rule in ("acc", "acc_norm"):
        assert report[rule] == pytest.approx(sum(s[rule] for s in theirs) / len(theirs))


def test_per_item_goes_with_hellaswag(tmp_path, capsys):
    assert "--per-item goes with --hellaswag" in eval_error(capsys, tmp_path / "run", "--per-item", tmp_path / "o")
