"""``eval_tasks``: multiple-choice files scored while training, as Composer evaluators. Each logged score equals
``eval.py --hellaswag`` on the checkpoint of that step (1 and 2 ranks), each task keeps its own interval, a killed
and resumed run scores at the same steps with the same figures, and a bad file stops the run before its first
step. Real training runs (subprocesses of the script and Composer's launcher)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.helpers import kill_when, last_step, metrics_rows, one_error, run_train, start_train, tiny_args

RULES = ("acc", "acc_norm", "acc_norm_tokens")
STEPS = 40


@pytest.fixture(scope="module")
def items(tmp_path_factory, shakespeare_text) -> Path:
    """41 items (odd: two ranks get 21 and 20 + a padding item): a line's start, its real next 8 characters among
    three shuffles of them."""
    rng = random.Random(0)
    lines = [line for line in shakespeare_text.splitlines() if len(line) > 30]
    path = tmp_path_factory.mktemp("mc") / "mc.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for line in lines[:41]:
            ctx, end = line[:20], line[20:28]
            fakes = ["".join(rng.sample(end, len(end))).strip() or "x" for _ in range(3)]
            label = rng.randrange(4)
            f.write(json.dumps({"ctx": ctx, "endings": fakes[:label] + [end] + fakes[label:], "label": label}) + "\n")
    return path


def _args(dataset: Path, tmp_path: Path, items: Path, name: str, *extra: str) -> list[str]:
    return tiny_args(dataset, tmp_path, f"run_name={name}", f"max_duration={STEPS}ba", "eval_interval=20ba",
                     "save_interval=10ba", "save_num_checkpoints_to_keep=-1",
                     f"eval_tasks=[{{name: mc, path: {items}, interval: 10ba}}]", *extra)


def _scores(run: Path) -> dict[int, dict[str, float]]:
    """{step: {rule: score}} of the mc task; each step logged once."""
    rows = [r for r in metrics_rows(run) if "metrics/mc/acc" in r]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), steps
    return {r["step"]: {rule: r[f"metrics/mc/{rule}"] for rule in RULES} for r in rows}


def _eval_py(run: Path, step: int, items: Path) -> dict[str, float]:
    """What ``eval.py CHECKPOINT --hellaswag ITEMS`` reports (its functions, in this process)."""
    from evaluation.checkpoints import load_gpt
    from evaluation.evaluate import evaluate_choices

    ckpt = str(run / "checkpoints" / f"ep0-ba{step}-rank0.pt")
    result = evaluate_choices(ckpt, load_gpt(ckpt), str(items), None)
    return {rule: result[rule] for rule in RULES}


@pytest.fixture(scope="module")
def one_rank(dataset, tmp_path_factory, items) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    run_train(_args(dataset, root, items, "one"))
    return root / "one"


@pytest.mark.slow
def test_each_score_is_eval_py_on_that_checkpoint_and_each_task_keeps_its_interval(one_rank, items):
    scores = _scores(one_rank)
    assert sorted(scores) == [10, 20, 30, 40]  # the task's 10ba, not eval_interval's 20ba
    assert sorted(r["step"] for r in metrics_rows(one_rank) if "metrics/val/LanguageCrossEntropy" in r) == [20, 40]
    for step, logged in scores.items():
        assert logged == pytest.approx(_eval_py(one_rank, step, items), abs=1e-6), step
    rows = [r for r in metrics_rows(one_rank) if "time/eval/mc" in r]
    assert len(rows) == 4 and all(r["time/eval/mc"] > 0 for r in rows)  # the cost of each eval
    assert "TokenAccuracy" not in " ".join(k for r in metrics_rows(one_rank) for k in r if k.startswith("metrics/mc"))


def test_plot_draws_each_tasks_acc_norm(one_rank, tmp_path):
    from evaluation.compare import panels, plot_runs

    drawn = panels([str(one_rank)])
    assert list(drawn) == ["train", "val", "mc acc_norm"]
    assert drawn["mc acc_norm"]["one"] == [(step, s["acc_norm"]) for step, s in sorted(_scores(one_rank).items())]
    png = plot_runs([str(one_rank)], str(tmp_path / "curves.png"))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_two_ranks_split_the_items_and_score_as_eval_py(dataset, tmp_path, items):
    run_train(_args(dataset, tmp_path, items, "two"), nproc=2)
    scores = _scores(tmp_path / "two")
    assert sorted(scores) == [10, 20, 30, 40]
    for step in (20, 40):
        assert scores[step] == pytest.approx(_eval_py(tmp_path / "two", step, items), abs=1e-6), step


@pytest.mark.slow
def test_a_killed_run_resumes_the_eval_schedule(dataset, tmp_path, items, one_rank):
    run = tmp_path / "one"
    args = _args(dataset, tmp_path, items, "one")
    kill_when(start_train(args, tmp_path / "first.log"), lambda: last_step(run) >= 25)
    run_train(args)
    assert _scores(run) == _scores(one_rank)


@pytest.mark.slow
def test_a_bad_task_file_stops_the_run_before_its_first_step(dataset, tmp_path):
    """Every problem of a file (missing, empty, not JSON, a label out of range, fewer than 2 endings) is the one
    reader's error (tests/loaders/test_choices.py, tests/evaluation/test_eval.py); here, that it stops the run."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"ctx": "A", "endings": ["b", "c"], "label": 1}\n'
                    '{"ctx": "A", "endings": ["b", "c"], "label": 5}\n')
    proc = run_train(_args(dataset, tmp_path, path, "bad"), check=False)
    one_error(proc, str(path), ":2: label must be an int in [0, 2), got 5")
    run = tmp_path / "bad"
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
    assert not any("loss/train/total" in r for r in (metrics_rows(run) if (run / "metrics.jsonl").exists() else []))
