"""`make demo`: build a small byte-level MDS from this Python's standard library, train yamls/tiny.yaml on
CPU while scoring a next-line multiple-choice task made from the same corpus, then print the final val loss,
bits/byte, the task's accuracy by step and a sample, and draw the curves. Needs no network."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conversion.convert import convert  # noqa: E402
from core.runs import PRECISION_FILE, read_metrics  # noqa: E402
from evaluation.checkpoints import load_gpt, run_tokenizer  # noqa: E402
from evaluation.compare import plot_runs  # noqa: E402
from sampling import sample_text  # noqa: E402

CORPUS_MB = 6
DATA = ROOT / "data" / "demo"
SOURCE = ROOT / "data" / "demo_src"
RUNS = ROOT / "runs"
VAL_KEY = "metrics/val/LanguageCrossEntropy"
CHOICE_KEY = "metrics/next_line/acc_norm"
CHOICE_ITEMS = 200


def stdlib_corpus(out: Path, limit_mb: int = CORPUS_MB) -> Path:
    """One JSON line per standard-library module (tests excluded), sorted, up to ``limit_mb``."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if not {"site-packages", "test", "tests"} & set(p.parts))
    out.parent.mkdir(parents=True, exist_ok=True)
    total = 0
    with open(out, "w", encoding="utf-8") as f:
        for path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            f.write(json.dumps({"text": text, "path": str(path.relative_to(stdlib))}) + "\n")
            total += len(text)
            if total > limit_mb * 1e6:
                break
    return out


def _scrambles(words: list[str], rng: random.Random, count: int = 3) -> list[str]:
    """``count`` distinct orders of ``words`` other than their own, joined by single spaces."""
    real, found = " ".join(words), set()
    while len(found) < count:
        order = rng.sample(words, len(words))
        if " ".join(order) != real:
            found.add(" ".join(order))
    return rng.sample(sorted(found), count)


def next_line_items(corpus: Path, out: Path, count: int = CHOICE_ITEMS, seed: int = 0) -> Path:
    """A multiple-choice file from the corpus (HellaSwag's layout): three lines of code, then their real next line
    among three scrambles of its own words. Every ending has the same bytes, so only the order tells: a model at
    chance (0.25) picks the real line more often as it learns how Python is written (0.9 after the demo's 1,000
    steps). Real lines drawn from elsewhere are too hard for this model to rise above ~0.3."""
    rng = random.Random(seed)
    lines = [line for doc in corpus.read_text(encoding="utf-8").splitlines()
             for line in json.loads(doc)["text"].splitlines()]

    def usable(i: int) -> bool:
        words = lines[i].split()
        return (3 <= len(words) <= 8 and len(set(words)) == len(words) and 8 <= len(lines[i].strip()) <= 60
                and 0 < len("\n".join(lines[i - 3:i])) <= 120)

    with open(out, "w", encoding="utf-8") as f:
        for i in rng.sample([i for i in range(3, len(lines)) if usable(i)], count):
            words, indent = lines[i].split(), lines[i][:len(lines[i]) - len(lines[i].lstrip())]
            label, fakes = rng.randrange(4), _scrambles(words, rng)
            endings = [indent + e for e in fakes[:label] + [" ".join(words)] + fakes[label:]]
            f.write(json.dumps({"ctx": "\n".join(lines[i - 3:i]) + "\n", "endings": endings, "label": label}) + "\n")
    return out


def precision_line(run_dir: Path) -> str:
    """What tiny.yaml's ``precision: auto`` chose for this machine, and the times it chose by."""
    path = run_dir / PRECISION_FILE
    if not path.is_file():  # precision set explicitly on the command line
        return "set on the command line"
    choice = json.loads(path.read_text(encoding="utf-8"))
    return f"{choice['precision']} (auto: {choice['why']})"


def main() -> int:
    corpus = SOURCE / "stdlib.jsonl"
    if not corpus.exists():
        stdlib_corpus(corpus)
    if not (DATA / "metadata.json").exists():
        convert([str(corpus)], str(DATA), tokenizer="bytes", seq_len=128, val_fraction=0.02, overwrite=True)
    items = next_line_items(corpus, SOURCE / "next_line.jsonl")
    cmd = [sys.executable, str(ROOT / "gpt_pile_composer.py"), str(ROOT / "yamls" / "tiny.yaml"),
           f"data.path={DATA}", f"runs_root={RUNS}", f"eval_tasks=[{{name: next_line, path: {items}}}]",
           *sys.argv[1:]]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    run_dir = RUNS / "tiny"
    rows = read_metrics(run_dir)
    last_val = [r for r in rows if VAL_KEY in r][-1]
    png = plot_runs([str(run_dir)], str(run_dir / "loss.png"))
    model = load_gpt(str(run_dir))
    text = sample_text(model, run_tokenizer(str(run_dir)), "def ", max_new_tokens=300)
    print("\n" + "=" * 72)
    print(f"final val loss   {last_val[VAL_KEY]:.4f} nats/token (step {last_val['step']})")
    print(f"final val bpb    {last_val['metrics/val/BitsPerByte']:.4f} bits/byte")
    print(f"precision        {precision_line(run_dir)}")
    scores = ", ".join(f"{r['step']}: {r[CHOICE_KEY]:.2f}" for r in rows if CHOICE_KEY in r)
    print(f"next-line choice acc_norm by step {scores}  (chance 0.25; {CHOICE_ITEMS} items)")
    print(f"loss curve       {png}")
    print(f"sample           (prompt 'def ', temperature 0.8, top-k 40)\n{'-' * 72}\n{text}\n{'-' * 72}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
