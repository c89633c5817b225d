"""README, "Generating text": `SOURCE` is a run folder (its latest checkpoint), one checkpoint (a `.pt` file or a
sharded FSDP folder), or a transformers GPT-2 folder; the tokenizer comes with it. `--temperature 0` is greedy.

A real 2-rank FSDP run (`composer -n 2`, `parallelism=fsdp`, `fsdp.state_dict_type=sharded`, as
tests/training/test_fsdp.py runs it) leaves a sharded checkpoint folder; generate.py on that folder, and on the run
folder whose latest is that folder, gives the greedy continuation that the same weights give when gathered
independently of this project (torch's own dcp_to_torch_save) into gpt.py's GPT, and that the monolithic
Hugging Face export of the checkpoint (export_hf.py) gives.

Also from the README: `--json` prints `{"prompt", "prompt_ids", "new_ids", "text", "seed"}`; an empty prompt starts a
new document; samples during training (`sample_prompt`) are skipped under FSDP with a warning.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.helpers import COMPOSER, PYTHON, REPO, make_dataset, tiny_args, train_env

pytestmark = pytest.mark.slow

PROMPT = "ROMEO:"
NEW = 24


def _env() -> dict[str, str]:
    env = train_env()
    env["WANDB_MODE"] = "offline"
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory, shakespeare_text) -> Path:
    root = tmp_path_factory.mktemp("fsdp_gen")
    ds = make_dataset(root, shakespeare_text[:100_000], seq_len=32)
    args = tiny_args(ds, root, "run_name=f", "model.n_head=4", "global_train_batch_size=8",
                     "device_train_microbatch_size=4", "max_duration=4ba", "save_interval=4ba", "eval_interval=1000ba",
                     "optimizer.lr=3e-3", "parallelism=fsdp", "fsdp.state_dict_type=sharded",
                     f"sample_prompt='{PROMPT}'",
                     "sample_interval=2ba")
    args = [str(REPO / a) if a.startswith("yamls/") else a for a in args]
    proc = subprocess.run([COMPOSER, "-n", "2", str(REPO / "gpt_pile_composer.py"), *args], cwd=root, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = root / "f"
    ckpt = run / "checkpoints" / "ep0-ba4"
    assert ckpt.is_dir() and sorted(p.name for p in ckpt.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    (run / "launcher_output.txt").write_text(proc.stdout + proc.stderr)
    return run


def _generate_cli(source: Path, cwd: Path) -> dict:
    proc = subprocess.run([PYTHON, str(REPO / "generate.py"), str(source), "--prompt", PROMPT, "--temperature", "0",
                           "--max-new-tokens", str(NEW), "--ignore-eos", "--seed", "1", "--json"], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _generate(source: Path, capsys) -> dict:
    import generate

    assert generate.main([str(source), "--prompt", PROMPT, "--temperature", "0", "--max-new-tokens", str(NEW),
                          "--ignore-eos", "--seed", "1", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _reference_greedy(run: Path, ckpt: Path, tmp_path: Path) -> list[int]:
    """Gather the shards with torch's own converter, load gpt.py's GPT, and take the argmax token by token
    (no KV cache, no sampling code of this project)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from gpt import GPT, GPTConfig

    full = tmp_path / "gathered.pt"
    dcp_to_torch_save(str(ckpt), str(full))
    state = torch.load(full, map_location="cpu", weights_only=False)
    weights = {k.removeprefix("model."): v for k, v in state["state"]["model"].items()}
    model = GPT(GPTConfig(**json.loads((run / "model.json").read_text())))
    model.load_state_dict(weights)
    model.eval()
    ids = list(PROMPT.encode())  # the run's dataset is byte-tokenized
    with torch.no_grad():
        for _ in range(NEW):
            logits = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(PROMPT):]


def test_generate_from_a_sharded_fsdp_checkpoint_matches_the_gathered_weights(sharded_run, tmp_path, capsys):
    ckpt = sharded_run / "checkpoints" / "ep0-ba4"
    want = _reference_greedy(sharded_run, ckpt, tmp_path)
    assert len(set(want)) > 1  # a trained model, not one repeated token
    from_folder = _generate_cli(ckpt, tmp_path)  # the script, as a user runs it, outside the repo
    assert from_folder["prompt_ids"] == list(PROMPT.encode())
    assert from_folder["new_ids"] == want
    assert from_folder["text"] == PROMPT + bytes(want).decode("utf-8", errors="replace")
    assert (sharded_run / "checkpoints" / "latest-rank0.pt").resolve() == ckpt.resolve()
    assert _generate(sharded_run, capsys) == from_folder  # the run folder: its latest, the sharded folder


def test_generate_from_the_monolithic_export_gives_the_same_greedy_text(sharded_run, tmp_path, capsys):
    import export_hf

    ckpt = sharded_run / "checkpoints" / "ep0-ba4"
    assert export_hf.main([str(ckpt), str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    assert (tmp_path / "hf" / "model.safetensors").is_file() and not list((tmp_path / "hf").glob("*.distcp"))
    assert _generate(tmp_path / "hf", capsys) == _generate(ckpt, capsys)


def test_json_keys_and_an_empty_prompt_starts_a_new_document(sharded_run, capsys):
    import generate

    assert generate.main([str(sharded_run), "--prompt", "", "--temperature", "0", "--max-new-tokens", "5",
                          "--ignore-eos", "--seed", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["prompt", "prompt_ids", "new_ids", "text", "seed"]
    assert out["prompt"] == "" and out["prompt_ids"] == [256] and len(out["new_ids"]) == 5  # 256: the bytes EOS
    assert out["seed"] == 2


def test_samples_during_training_are_skipped_under_fsdp_with_a_warning(sharded_run):
    output = (sharded_run / "launcher_output.txt").read_text()
    assert output.count("UserWarning: sample_prompt: no samples under FSDP") == 1, output[-3000:]  # rank 0, once
    rows = [json.loads(line) for line in (sharded_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert not any("samples/text" in r for r in rows)
