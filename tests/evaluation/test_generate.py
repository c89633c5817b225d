"""Generation: gpt.py's KV cache and sampling, generate.py (against transformers), the training sample callback."""
from __future__ import annotations

import html
import json
import subprocess
from pathlib import Path

import pytest
import torch

import generate
from gpt import GPT, GPTConfig, KVCache
from sampling import generate as generate_ids
from sampling import sample_next, top_p_filter
from tests.helpers import REPO, error_line, make_dataset, metrics_rows, run_script, run_train, start_train, tiny_args

VOCAB = 257
BLOCK = 16


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=BLOCK, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32)).eval()


# ---------------------------------------------------------------- the KV cache


def test_cached_logits_match_uncached_at_every_position(model):
    idx = torch.randint(0, VOCAB, (2, BLOCK))
    full = model(idx)  # (2, 16, V): causal, so position t only depends on tokens <= t
    cache = KVCache(model.config)
    # prefill from 0, a second multi-token chunk on top of the cache (masked causally), then one token at a time
    pieces = [model(idx[:, :5], cache), model(idx[:, 5:9], cache)]
    pieces += [model(idx[:, t : t + 1], cache) for t in range(9, BLOCK)]
    assert cache.length == BLOCK
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="after 16 cached tokens"):
        model(idx[:, :1], cache)  # absolute positions: a full cache takes no more


def test_greedy_with_cache_equals_plain_uncached_loop(model):
    prompt = torch.randint(0, VOCAB, (2, 5))
    reference = prompt
    for _ in range(20):  # past block_size (16): nanoGPT crops the context to the last block_size tokens
        logits = model(reference[:, -BLOCK:])[:, -1, :]
        reference = torch.cat((reference, logits.argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(generate_ids(model, prompt, 20, temperature=0.0), reference)


def test_generation_is_linear_one_token_per_step_after_prefill(model):
    tokens_per_call: list[int] = []
    model.register_forward_pre_hook(lambda module, args: tokens_per_call.append(args[0].size(1)))
    generate_ids(model, torch.zeros(1, 6, dtype=torch.long), 10)
    assert tokens_per_call == [6] + [1] * 9  # prefill the prompt, then only the new token
    tokens_per_call.clear()
    generate_ids(model, torch.zeros(1, 6, dtype=torch.long), 14)  # reaches 20 > block_size tokens
    assert tokens_per_call == [6] + [1] * 10 + [BLOCK] * 3  # a full cache re-runs the cropped context


# ---------------------------------------------------------------- sampling


def test_top_p_keeps_the_same_ids_as_transformers():
    from transformers import TopPLogitsWarper

    torch.manual_seed(1)
    logits = torch.randn(8, 100) * 3
    for p in (0.1, 0.5, 0.9):
        ours = top_p_filter(logits, p)
        theirs = TopPLogitsWarper(top_p=p)(None, logits.clone())
        assert torch.equal(torch.isfinite(ours), torch.isfinite(theirs)), p
        assert torch.equal(ours[torch.isfinite(ours)], logits[torch.isfinite(ours)])
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(4000, -1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(probs, top_p=0.7, generator=g).flatten().tolist()) == {0, 1}  # 0.5 + 0.3 >= 0.7
    assert set(sample_next(probs, top_p=1.0, generator=g).flatten().tolist()) == {0, 1, 2, 3}


def test_private_generator_seeds_samples_and_leaves_global_rng_alone(model):
    prompt = torch.randint(0, VOCAB, (1, 4))
    rng = torch.get_rng_state()

    def run(seed: int) -> torch.Tensor:
        return generate_ids(model, prompt, 12, temperature=1.5, top_p=0.95,
                            generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
    assert torch.equal(torch.get_rng_state(), rng)


def test_stops_at_eos_and_pads_finished_rows(model):
    prompt = torch.randint(0, VOCAB, (2, 4))
    free = generate_ids(model, prompt, 10, temperature=0.0)  # (2, 14)
    eos = free[0, 6].item()  # row 0's third new token
    ends = [next((t + 1 for t in range(4, 14) if free[r, t] == eos), 14) for r in range(2)]
    out = generate_ids(model, prompt, 10, temperature=0.0, eos_id=eos)
    assert out.shape == (2, max(ends))  # stops once every row has ended
    for r, end in enumerate(ends):
        assert torch.equal(out[r, :end], free[r, :end]) and (out[r, end:] == eos).all()


# ---------------------------------------------------------------- generate.py


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, gpt2_dir) -> Path:
    """A random small GPT-2 in transformers' format, with the real GPT-2 tokenizer saved next to it."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257)).save_pretrained(
        folder)
    GPT2TokenizerFast(vocab_file=str(gpt2_dir / "vocab.json"), merges_file=str(gpt2_dir / "merges.txt")
                      ).save_pretrained(folder)
    return folder


def run_generate(*args: str) -> subprocess.CompletedProcess:
    return run_script("generate.py", *args, timeout=120)


@pytest.mark.slow  # generate.py as a subprocess
def test_greedy_matches_transformers_generate(hf_dir):
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast

    prompt = "The quick brown fox jumps"
    proc = run_generate(str(hf_dir), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "30", "--json")
    assert proc.returncode == 0, proc.stderr
    ours = json.loads(proc.stdout)
    input_ids = GPT2TokenizerFast.from_pretrained(hf_dir)(prompt, return_tensors="pt").input_ids
    hf = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    theirs = hf.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False, max_new_tokens=30,
                         pad_token_id=hf.config.eos_token_id)
    assert ours["prompt_ids"] == input_ids[0].tolist()
    assert ours["prompt_ids"] + ours["new_ids"] == theirs[0].tolist()
    assert len(ours["new_ids"]) == 30 and ours["text"].startswith(prompt)


def test_same_seed_same_text_other_seed_differs(hf_dir, capsys):
    def text(seed: str) -> dict:
        assert generate.main([str(hf_dir), "--prompt", "Hello", "--seed", seed, "--temperature", "1", "--top-k",
                              "1000", "--max-new-tokens", "12", "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    first = text("7")
    assert first == text("7") and first["seed"] == 7
    assert first["new_ids"] != text("8")["new_ids"]


@pytest.mark.parametrize("source, args, message", [
    ("hf", ["--max-new-tokens", "-1"], "--max-new-tokens must be >= 0"),
    ("hf", ["--temperature", "-0.5"], "--temperature must be >= 0"),
    ("hf", ["--top-p", "0"], "--top-p must be in (0, 1]"),
    ("hf", ["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    ("hf", ["--top-k", "0"], "--top-k must be >= 1"),
    ("hf", ["--prompt", " ".join(["word"] * 70)], "the prompt is 70 tokens but the model reads at most 64"),
    ("hf", ["--max-new-tokens", "ten"], "invalid int value"),
    ("no-such-run", [], "no-such-run is neither a run folder nor a checkpoint file"),
    ("no-such-run", ["--device", "gpu"], "--device 'gpu' is not a device; use cpu, cuda or cuda:N"),  # first
])
def test_bad_arguments_one_error_line_exit_2(hf_dir, capsys, source, args, message):
    path = hf_dir if source == "hf" else hf_dir.parent / source
    try:
        code = generate.main([str(path), "--prompt", "Hi", *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in error_line(err), err


@pytest.mark.slow  # trains, then export_hf.py as a subprocess
def test_a_chars_run_trains_on_its_alphabet_and_generates_in_it(tmp_path, shakespeare_text, capsys):
    """--tokenizer chars end to end: training sizes the model from the tokenizer saved next to the shards
    (the text's characters + EOS), generation writes only those characters, and a prompt with a character
    outside them is one error line naming it."""
    text = shakespeare_text[:40_000]
    ds = make_dataset(tmp_path, text, seq_len=32, tokenizer="chars")
    alphabet = set(text)
    run_train(tiny_args(ds, tmp_path, "run_name=chars", "max_duration=3ba", "eval_interval=1000ba"))
    run = tmp_path / "chars"
    assert generate.main([str(run), "--prompt", "ROMEO:", "--max-new-tokens", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt_ids"] == [sorted(alphabet).index(ch) for ch in "ROMEO:"]  # nanoGPT's ids
    assert max(out["new_ids"]) <= len(alphabet) and set(out["text"]) <= alphabet | set("<|endoftext>")
    assert generate.main([str(run), "--prompt", "café €5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "characters not in its vocabulary: '5é€'" in error_line(err), err
    # exported, transformers reads the same tokenizer and model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evaluation.checkpoints import load_gpt

    proc = run_script("export_hf.py", run, tmp_path / "export", timeout=120)
    assert proc.returncode == 0 and "tokenizer: " in proc.stdout, proc.stderr[-3000:]
    tok = AutoTokenizer.from_pretrained(tmp_path / "export")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    assert tok.encode("ROMEO:") == out["prompt_ids"]
    assert tok.decode(out["new_ids"], skip_special_tokens=True) == out["text"][len("ROMEO:"):]
    assert (len(tok), tok.eos_token_id) == (len(alphabet) + 1, len(alphabet))
    idx = torch.tensor([tok.encode(text[:32])])  # the model reads 32
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits[..., :len(tok)], load_gpt(str(run))(idx)[..., :len(tok)],
                                   atol=1e-5, rtol=0)


# ---------------------------------------------------------------- samples during training


PROMPT = "ROMEO:"


@pytest.fixture(scope="module")
def sampled_runs(tmp_path_factory, shakespeare_text) -> tuple[Path, Path]:
    """The same tiny run (with dropout, so the RNG matters) with and without sample_prompt, both at once."""
    root = tmp_path_factory.mktemp("samples")
    ds = make_dataset(root, shakespeare_text[:100_000], seq_len=32)
    common = ["max_duration=12ba", "model.dropout=0.1", "eval_interval=1000ba", "save_interval=1000ba"]
    runs = {
        "plain": tiny_args(ds, root, "run_name=plain", *common),
        "sampled": tiny_args(ds, root, "run_name=sampled", *common, f"sample_prompt='{PROMPT}'",
                             "sample_interval=5ba", "sample_max_new_tokens=16", "wandb.enabled=true"),
    }
    procs = {name: start_train(args, root / f"{name}.log") for name, args in runs.items()}
    for name, proc in procs.items():
        assert proc.wait(timeout=300) == 0, (root / f"{name}.log").read_text()[-3000:]
    return root / "plain", root / "sampled"


@pytest.mark.slow
def test_samples_logged_at_the_interval_without_changing_training(sampled_runs):
    plain, sampled = (metrics_rows(run) for run in sampled_runs)
    texts = {r["step"]: r["samples/text"] for r in sampled if "samples/text" in r}
    assert sorted(texts) == [5, 10, 12]  # every 5 batches, and at the end of training
    for text in texts.values():
        assert isinstance(text, str) and text.startswith(PROMPT) and len(text) > len(PROMPT)
    assert not any("samples/text" in r for r in plain)
    loss = "loss/train/total"
    assert [r[loss] for r in sampled] == [r[loss] for r in plain]  # bit-identical: RNG and train mode untouched
    assert len(plain) == 12
    pages = {int(page.name.split("_")[1]): page  # wandb (offline) keeps one HTML page per step: text_{step}_{hash}
             for page in sampled_runs[1].glob("wandb/offline-run-*/files/media/html/samples/text_*.html")}
    assert sorted(pages) == [5, 10, 12]
    assert f"<pre>{html.escape(texts[12])}</pre>" in pages[12].read_text(encoding="utf-8")


@pytest.mark.slow
def test_run_folder_and_checkpoint_sources(sampled_runs, capsys):
    run = sampled_runs[1]
    outs = []
    for source in (run, run / "checkpoints" / "latest-rank0.pt"):
        assert generate.main([str(source), "--prompt", PROMPT, "--seed", "3", "--max-new-tokens", "10",
                              "--ignore-eos", "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1]
    assert outs[0]["prompt_ids"] == list(PROMPT.encode()) and len(outs[0]["new_ids"]) == 10


@pytest.mark.parametrize("override, message", [
    ("sample_interval=5", "sample_interval='5' is not a positive duration"),  # Composer would read 5 seconds
    ("sample_interval=0ba", "sample_interval='0ba' is not a positive duration"),
    ("sample_max_new_tokens=0", "sample_max_new_tokens=0 is out of range; valid: >= 1"),
    ("sample_temperature=-1", r"sample_temperature=-1.0 is out of range; valid: >= 0 \(0 = greedy\)"),
])
def test_bad_sample_settings_are_config_errors(override, message):
    from core.errors import ConfigError
    from training.config import load_config

    yaml = str(REPO / "yamls" / "tiny.yaml")
    assert load_config(yaml, ["sample_prompt=x"]).sample_interval is None  # None: eval_interval
    with pytest.raises(ConfigError, match=message):
        load_config(yaml, ["sample_prompt=x", override])
