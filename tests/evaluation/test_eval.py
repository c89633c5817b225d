"""eval.py: a checkpoint's val metrics on any dataset split (reproducing what training logged), and HellaSwag-format
multiple choice. One real training run (subprocess) shared by every test; eval.py's main is called in-process."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import error_line, make_dataset, metrics_rows, run_train, tiny_args, train_env

HELLASWAG = Path(__file__).resolve().parents[1] / "data" / "hellaswag_tiny.jsonl"
METRICS = ("LanguageCrossEntropy", "LanguagePerplexity", "BitsPerByte", "TokenAccuracy")
STEPS = 150  # enough for a byte model to learn which letters follow which (the multiple-choice test needs that)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shakespeare_text) -> Path:
    """Overrides conftest's: samples of 64 tokens, and every val sample is evaluated (see ``run``)."""
    return make_dataset(tmp_path_factory.mktemp("data"), shakespeare_text[:100_000], seq_len=64, val_fraction=0.05)


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory) -> Path:
    """Its last step is both an eval over the whole val split and a checkpoint: eval.py must reproduce it.
    One thread: a model this small gains nothing from two, and on a busy machine two spin-wait for each other."""
    runs = tmp_path_factory.mktemp("runs")
    run_train(tiny_args(dataset, runs, "run_name=ev", "model.n_embd=64", "global_train_batch_size=16",
                        "device_train_microbatch_size=16", "optimizer.lr=2e-3", "scheduler.t_warmup=10ba",
                        f"max_duration={STEPS}ba", f"eval_interval={STEPS}ba", f"save_interval={STEPS}ba",
                        "eval_subset_num_batches=-1"), env={**train_env(), "OMP_NUM_THREADS": "1"})
    return runs / "ev"


def final_checkpoint(run: Path) -> Path:
    return (run / "checkpoints" / "latest-rank0.pt").resolve()


def eval_main(capsys, *argv: str) -> tuple[int, str, str]:
    import eval as eval_script

    code = eval_script.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def eval_json(capsys, *argv: str) -> dict:
    code, out, err = eval_main(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def eval_error(capsys, *argv: str) -> str:
    code, out, err = eval_main(capsys, *argv)
    assert code == 2 and out == "", (code, out)
    line = error_line(err)
    assert err.strip() == line, err  # nothing else on stderr
    return line


# ---------------------------------------------------------------------------------------------------- LM metrics


@pytest.mark.slow
def test_eval_reproduces_the_runs_last_val_metrics(run, dataset, capsys):
    logged = [r for r in metrics_rows(run) if "metrics/val/LanguageCrossEntropy" in r][-1]
    assert logged["step"] == STEPS and final_checkpoint(run).name.endswith(f"-ba{STEPS}-rank0.pt")
    result = eval_json(capsys, run)  # no --data: the run's own val split, latest checkpoint
    for name in METRICS:
        assert result[name] == pytest.approx(logged[f"metrics/val/{name}"], rel=1e-5), name
    val_samples = json.loads((dataset / "metadata.json").read_text())["splits"]["val"]["samples"]
    assert result["tokens"] == val_samples * 64  # every val sample, once
    assert result["LanguageCrossEntropy"] < math.log(257) - 1  # a trained model, not a uniform one


@pytest.mark.slow
def test_eval_any_dataset_stream_split_and_checkpoint_file(run, tmp_path, shakespeare_text, capsys):
    other = make_dataset(tmp_path, shakespeare_text[600_000:640_000], seq_len=32, val_fraction=0.2)
    part = ("--data", other, "--split", "train", "--max-batches", "2", "--batch-size", "4")
    first = eval_json(capsys, final_checkpoint(run), *part)
    assert first["tokens"] == 2 * 4 * 32 and first["split"] == "train"  # shorter samples than block_size: fine
    assert all(math.isfinite(first[name]) for name in METRICS)
    assert first["LanguagePerplexity"] == pytest.approx(math.exp(first["LanguageCrossEntropy"]), rel=1e-5)
    assert eval_json(capsys, run, *part) == {**first, "source": str(run)}  # the run folder's latest checkpoint
    stream = eval_json(capsys, run, "--stream", "dataset")  # a lone data.path's name, as in RUN/data/dataset/
    assert stream["data"] == "stream dataset of run ev"
    logged = [r for r in metrics_rows(run) if "metrics/val/LanguageCrossEntropy" in r][-1]
    assert stream["LanguageCrossEntropy"] == pytest.approx(logged["metrics/val/LanguageCrossEntropy"], rel=1e-5)


@pytest.mark.slow
def test_eval_exported_hf_folder_gives_the_runs_metrics(run, dataset, tmp_path, capsys):
    """eval.py takes a Hugging Face folder directly: the run exported by export_hf.py scores as the run does."""
    import export_hf

    assert export_hf.main([str(run), str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    ours = eval_json(capsys, run, "--data", dataset, "--max-batches", "3", "--batch-size", "8")
    hf = eval_json(capsys, tmp_path / "hf", "--data", dataset, "--max-batches", "3", "--batch-size", "8")
    assert hf["tokens"] == ours["tokens"] > 0
    for name in METRICS:
        assert hf[name] == pytest.approx(ours[name], rel=1e-5), name
    hellaswag = eval_json(capsys, tmp_path / "hf", "--hellaswag", HELLASWAG)
    assert hellaswag == {**eval_json(capsys, run, "--hellaswag", HELLASWAG), "source": str(tmp_path / "hf")}


@pytest.mark.slow
def test_eval_refuses_bad_sources_streams_splits_and_long_samples(run, tmp_path, shakespeare_text, capsys):
    assert "neither a run folder nor a checkpoint" in eval_error(capsys, tmp_path / "nope")
    assert "no stream 'web'; its streams: dataset" in eval_error(capsys, run, "--stream", "web")
    assert "no 'test' split (its splits: train, val)" in eval_error(capsys, run, "--split", "test")
    long = make_dataset(tmp_path, shakespeare_text[:20_000], seq_len=128, val_fraction=0.2)
    assert "seq_len 128, longer than the model's block_size 64" in eval_error(capsys, run, "--data", long)
    assert "--max-batches must be a positive integer" in eval_error(capsys, run, "--max-batches", "0")


@pytest.mark.parametrize("device, message", [
    ("gpu", "--device 'gpu' is not a device; use cpu, cuda or cuda:N"),
    ("cuda:x", "--device 'cuda:x' is not a device; use cpu, cuda or cuda:N"),
    ("cuda", "--device cuda: no CUDA device here; use --device cpu"),
    ("cuda:1", "--device cuda:1: no CUDA device here; use --device cpu"),
])
def test_eval_refuses_a_bad_device_before_loading_anything(device, message, tmp_path, capsys, monkeypatch):
    """The source does not exist: the device is refused first (as generate.py's, by the same check)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert message in eval_error(capsys, tmp_path / "nope", "--device", device)


def test_device_defaults_to_cuda_when_present_else_cpu(monkeypatch):
    from evaluation.checkpoints import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(None) == "cpu" and pick_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert (pick_device(None), pick_device("cuda"), pick_device("cuda:1")) == ("cuda", "cuda", "cuda:1")
    with pytest.raises(Exception, match=r"--device cuda:2: this machine has 2 CUDA devices \(cuda:0 to cuda:1\)"):
        pick_device("cuda:2")


@pytest.mark.slow
def test_eval_on_an_explicit_device_gives_the_default_devices_metrics(run, dataset, capsys):
    part = ("--data", dataset, "--max-batches", "3", "--batch-size", "8")
    default, cpu = eval_json(capsys, run, *part), eval_json(capsys, run, *part, "--device", "cpu")
    assert cpu["tokens"] == default["tokens"] > 0
    for name in METRICS:  # the same numbers on CPU; within float noise where the default is a GPU
        assert cpu[name] == pytest.approx(default[name], rel=1e-4), name
    choices = ("--hellaswag", HELLASWAG, "--max-batches", "3")
    assert eval_json(capsys, run, *choices, "--device", "cpu")["items"] == 3


@pytest.mark.slow
def test_eval_refuses_a_dataset_of_another_tokenizer(run, tmp_path, shakespeare_text, gpt2_dir, capsys):
    bpe = make_dataset(tmp_path, shakespeare_text[:5_000], seq_len=16, val_fraction=0.3, tokenizer=str(gpt2_dir))
    message = eval_error(capsys, run, "--data", bpe)
    assert f"tokenized with {gpt2_dir} (vocab 50257)" in message and "with bytes (vocab 257)" in message
    assert "--tokenizer bytes" in message


# ----------------------------------------------------------------------------------------------- multiple choice


def unbatched_losses(model, tokenizer, item) -> list[tuple[float, float]]:
    """(summed, mean) loss of each ending's tokens: one plain forward per ending, as lm-evaluation-harness's ``hf``
    model scores a (context, " " + ending) pair: the context's trailing whitespace moved into the ending, the row's
    last block_size + 1 tokens kept."""
    ctx = item.ctx.rstrip()
    moved = item.ctx[len(ctx):]
    out = []
    for ending in item.endings:
        cont = tokenizer.encode(moved + " " + ending)
        ids = torch.tensor([(tokenizer.encode(ctx) + cont)[-(model.config.block_size + 1):]])
        with torch.no_grad():
            logp = F.log_softmax(model(ids[:, :-1])[0].float(), dim=-1)
        nll = -logp[torch.arange(ids.shape[1] - 1 - len(cont), ids.shape[1] - 1), ids[0, -len(cont):]]
        out.append((nll.sum().item(), nll.mean().item()))
    return out


@pytest.mark.slow
def test_hellaswag_batched_scoring_matches_one_ending_at_a_time(run, capsys):
    from callbacks.choices import ending_losses
    from evaluation.checkpoints import load_gpt, load_tokenizer_for
    from loaders.choices import encode_item, read_items

    model, tokenizer = load_gpt(str(run)), load_tokenizer_for(str(run))
    items = read_items(str(HELLASWAG))
    assert any(len(set(map(len, i.endings))) > 1 for i in items)  # padding is in play
    assert any(len(tokenizer.encode(i.ctx)) + 10 > model.config.block_size for i in items)  # so is truncation
    assert any(i.ctx != i.ctx.rstrip() for i in items)  # and the context's trailing space moving into the endings
    hits = dict.fromkeys(("acc", "acc_norm", "acc_norm_tokens"), 0)
    for item in items:
        expected = unbatched_losses(model, tokenizer, item)
        for share_context in (False, True):  # a training run's evaluators; eval.py (the context once, KV cache)
            total, mean = ending_losses(model, *encode_item(item, tokenizer, model.config.block_size), share_context)
            assert total.tolist() == pytest.approx([s for s, _ in expected], rel=1e-4, abs=1e-4)
            assert mean.tolist() == pytest.approx([m for _, m in expected], rel=1e-4, abs=1e-4)
        endings = range(len(expected))
        hits["acc"] += min(endings, key=lambda i: expected[i][0]) == item.label
        # lm-evaluation-harness's acc_norm: log-likelihood per character of the ending
        hits["acc_norm"] += min(endings, key=lambda i: expected[i][0] / len(item.endings[i])) == item.label
        hits["acc_norm_tokens"] += min(endings, key=lambda i: expected[i][1]) == item.label  # build-nanoGPT's
    result = eval_json(capsys, run, "--hellaswag", HELLASWAG)
    assert result["items"] == len(items) == 8
    assert {k: result[k] for k in hits} == {k: n / len(items) for k, n in hits.items()}


@pytest.mark.slow
def test_hellaswag_trained_model_prefers_real_continuations(run, capsys):
    """Each item: the line's real end among three character shuffles (of it and of other endings)."""
    result = eval_json(capsys, run, "--hellaswag", HELLASWAG)
    assert result["acc_norm"] >= 0.75  # chance: 0.25
    assert eval_json(capsys, run, "--hellaswag", HELLASWAG, "--max-batches", "3")["items"] == 3


@pytest.mark.parametrize("line, problem", [
    ("{not json", "not JSON"),
    ('{"ctx": "A", "endings": ["b", "c"]}', "keys ctx, endings, label"),
    ('{"ctx": "A", "endings": ["b", "c"], "label": 2}', "label must be an int in [0, 2), got 2"),
    ('{"ctx": "A", "endings": [], "label": 0}', "endings must be a list of at least 2 non-empty strings"),
    ('{"ctx": "A", "endings": ["b", 3], "label": 0}', "endings must be a list of at least 2 non-empty strings"),
    ('{"ctx": "A", "endings": "bc", "label": 0}', "endings must be a list of at least 2 non-empty strings"),
    ('{"ctx": "A", "endings": ["b"], "label": 0}', "endings must be a list of at least 2 non-empty strings"),
])
def test_hellaswag_malformed_line_names_file_and_line(tmp_path, line, problem):
    from core.errors import HellaSwagError
    from loaders.choices import read_items

    path = tmp_path / "mc.jsonl"
    path.write_text('{"ctx": "A", "endings": ["b", "c"], "label": 1}\n' + line + "\n")
    with pytest.raises(HellaSwagError, match=f"^{re.escape(str(path))}:2: .*{re.escape(problem)}"):
        read_items(str(path))


@pytest.mark.slow
def test_hellaswag_bad_file_is_one_error_line(run, tmp_path, capsys):
    path = tmp_path / "mc.jsonl"
    path.write_text('{"ctx": "A", "endings": ["b", "c"], "label": true}\n')
    assert f"{path}:1: label must be an int" in eval_error(capsys, run, "--hellaswag", path)
