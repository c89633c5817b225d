"""README promises checked on two real (tiny) runs trained side by side:

- "The schedule is linear warmup (`scheduler.t_warmup`) then cosine to `scheduler.alpha_f x lr`": the lr logged
  in metrics.jsonl at every step against the closed form.
- `grad_clip_norm` ("0 disables clipping"): the global grad norm after clipping (what OptimizerMonitor logs, at
  BATCH_END) stays under the threshold, and without clipping the same run goes over it.
- metrics.jsonl logs "MFU when a peak is known (`peak_flops`)".
- `plot.py RUN_DIR... --out curves.png [--metric BitsPerByte]`: the PNG, with the chosen metric's values plotted,
  every run in each panel; it reads metrics.jsonl, so a run still being written (a torn last line) plots too.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import PYTHON, REPO, make_dataset, metrics_rows, tiny_args, train_env

pytestmark = pytest.mark.slow

LR, WARMUP, ALPHA_F, STEPS, CLIP = 2e-3, 5, 0.3, 20, 0.05
PEAK = 1e11  # peak_flops: a made-up device peak, FLOP/s
LR_KEYS = ("lr-DecoupledAdamW/group0", "lr-DecoupledAdamW/group1")  # matrices, then biases / LayerNorms
GRAD = "l2_norm/grad/global"


def _env() -> dict[str, str]:
    env = train_env()
    env["WANDB_MODE"] = "offline"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _args(ds: Path, runs: Path, *extra: str) -> list[str]:
    """tiny_args with the yaml by absolute path (the runs start in tmp_path, not in the repo)."""
    args = tiny_args(ds, runs, *extra)
    return [str(REPO / a) if a.startswith("yamls/") else a for a in args]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shakespeare_text) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("knobs")
    ds = make_dataset(root, shakespeare_text[:100_000], seq_len=32)
    common = [f"max_duration={STEPS}ba", f"scheduler.t_warmup={WARMUP}ba", f"scheduler.alpha_f={ALPHA_F}",
              f"optimizer.lr={LR}", "eval_interval=10ba", "save_interval=1000ba"]
    wanted = {"noclip": ["grad_clip_norm=0"],
              "clip": [f"grad_clip_norm={CLIP}", f"peak_flops={PEAK}", "speed_window=5"]}
    procs = {name: subprocess.Popen([PYTHON, str(REPO / "gpt_pile_composer.py"),
                                     *_args(ds, root, f"run_name={name}", *common, *extra)],
                                    cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, extra in wanted.items()}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    return {name: root / name for name in wanted}


def _closed_form(t: int) -> float:
    """The lr of optimizer step t + 1 (Composer's batch counter t: 0 for the first step)."""
    if t < WARMUP:
        return LR * t / WARMUP
    frac = (t - WARMUP) / (STEPS - WARMUP)
    return LR * (ALPHA_F + (1 - ALPHA_F) * 0.5 * (1 + math.cos(math.pi * frac)))


@pytest.mark.parametrize("name", ["noclip", "clip"])
def test_logged_lr_is_linear_warmup_then_cosine_to_alpha_f(runs, name):
    rows = metrics_rows(runs[name])
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for row in rows:
        want = _closed_form(row["step"] - 1)
        for key in LR_KEYS:  # both parameter groups follow the one schedule
            assert row[key] == pytest.approx(want, rel=1e-9, abs=1e-15), (row["step"], key)
    peak = max(r[LR_KEYS[0]] for r in rows)
    assert peak == pytest.approx(LR) and rows[WARMUP][LR_KEYS[0]] == pytest.approx(LR)  # step 6: warmup done
    assert rows[-1][LR_KEYS[0]] < LR * (ALPHA_F + 0.01)  # the last step is nearly down to alpha_f x lr


def test_grad_clip_norm_bounds_the_global_grad_norm_and_zero_disables_it(runs):
    clipped = {r["step"]: r[GRAD] for r in metrics_rows(runs["clip"]) if GRAD in r}
    free = {r["step"]: r[GRAD] for r in metrics_rows(runs["noclip"]) if GRAD in r}
    assert sorted(clipped) == sorted(free) == [10, 20]  # OptimizerMonitor: every 10 steps
    assert all(norm <= CLIP * (1 + 1e-4) for norm in clipped.values()), clipped
    assert all(norm > 2 * CLIP for norm in free.values()), free  # grad_clip_norm=0: no clipping at all
    loss = "loss/train/total"
    a, b = metrics_rows(runs["noclip"]), metrics_rows(runs["clip"])
    assert a[1][loss] == b[1][loss]  # the first step has lr 0: the same weights at step 2 ...
    assert a[-1][loss] != b[-1][loss]  # ... and clipping changes training after it


def test_mfu_is_logged_when_a_peak_is_known(runs):
    mfu = "throughput/device/mfu"
    rows = [r for r in metrics_rows(runs["clip"]) if mfu in r]
    assert rows, "no MFU with peak_flops set"
    for row in rows:
        assert row[mfu] == pytest.approx(row["throughput/device/flops_per_sec"] / PEAK, rel=1e-6)
        assert 0 < row[mfu] < 1
    assert not any(mfu in r for r in metrics_rows(runs["noclip"]))  # no peak on CPU: no MFU


# ----------------------------------------------------------------------------------------------- plot.py --metric


def _plotted(monkeypatch, run_dirs: list[Path], metric: str | None, out: Path):
    """Run plot.py's main in-process and return the figure it saved."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    import plot

    saved = []
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    argv = [*map(str, run_dirs), "--out", str(out)] + (["--metric", metric] if metric else [])
    assert plot.main(argv) == 0
    assert len(saved) == 1
    return saved[0]


def _val_points(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in rows if key in r]


def test_plot_metric_bits_per_byte_plots_that_metric_for_every_run(runs, tmp_path, monkeypatch, capsys):
    dirs = [runs["noclip"], runs["clip"]]
    fig = _plotted(monkeypatch, dirs, "BitsPerByte", tmp_path / "bpb.png")
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'bpb.png'}"
    assert (tmp_path / "bpb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.get_title() for ax in axes]
    assert titles == ["train loss (smoothed)", "val (each run's mixture) BitsPerByte"], titles
    val = axes[1]
    lines = {line.get_label(): list(zip(line.get_xdata(), line.get_ydata())) for line in val.get_lines()}
    assert set(lines) == {"noclip", "clip"}  # every run in the panel
    for name, points in lines.items():
        want = _val_points(metrics_rows(runs[name]), "metrics/val/BitsPerByte")
        assert [s for s, _ in want] == [10, 20]
        assert [s for s, _ in points] == [s for s, _ in want], name
        assert [v for _, v in points] == pytest.approx([v for _, v in want]), name
        ce = _val_points(metrics_rows(runs[name]), "metrics/val/LanguageCrossEntropy")
        assert [v for _, v in points] != pytest.approx([v for _, v in ce])  # not the default metric's values
    train = {line.get_label(): line for line in axes[0].get_lines()}
    assert set(train) == {"noclip", "clip"} and len(train["clip"].get_xdata()) == STEPS


def test_plot_cli_writes_the_png_and_default_metric_is_cross_entropy(runs, tmp_path, monkeypatch):
    proc = subprocess.run([PYTHON, str(REPO / "plot.py"), str(runs["clip"]), "--out", str(tmp_path / "c.png"),
                           "--metric", "BitsPerByte"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.png").stat().st_size > 1000
    fig = _plotted(monkeypatch, [runs["clip"]], None, tmp_path / "d.png")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()][1] == "val (each run's mixture) LanguageCrossEntropy"
    bad = subprocess.run([PYTHON, str(REPO / "plot.py"), str(runs["clip"]), "--metric", "Loss"], cwd=tmp_path,
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice: 'Loss'" in bad.stderr and "BitsPerByte" in bad.stderr


def test_plot_reads_a_run_still_being_written(runs, tmp_path, monkeypatch):
    live = tmp_path / "live"
    shutil.copytree(runs["clip"], live, ignore=shutil.ignore_patterns("checkpoints", "data_cache"))
    rows = metrics_rows(live)
    with open(live / "metrics.jsonl", "w") as f:  # 15 complete rows and half of the 16th, as a kill leaves it
        f.write("".join(json.dumps(r) + "\n" for r in rows[:15]) + json.dumps(rows[15])[:40])
    fig = _plotted(monkeypatch, [live], "BitsPerByte", tmp_path / "live.png")
    train, val = [ax for ax in fig.axes if ax.get_title()][:2]
    assert list(train.get_lines()[0].get_xdata()) == list(range(1, 16))
    assert [x for x in val.get_lines()[0].get_xdata()] == [10]
    assert os.path.getsize(tmp_path / "live.png") > 1000
