"""Export a trained run (or one checkpoint of it) as a Hugging Face GPT-2 folder.

    python export_hf.py RUN_DIR_OR_CHECKPOINT OUT_DIR [--overwrite]

OUT_DIR then loads with ``AutoModelForCausalLM.from_pretrained(OUT_DIR)`` and ``AutoTokenizer.from_pretrained``.
Sharded FSDP checkpoints are read in this one process. See evaluation/hf.py for the format mapping.
"""
from __future__ import annotations

import sys

from core.cli import ScriptParser, reports_errors
from evaluation.hf import export_hf


@reports_errors
def main(argv: list[str]) -> int:
    parser = ScriptParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a run folder (its latest checkpoint), a checkpoint file or sharded "
                                       "checkpoint folder, or a Hugging Face GPT-2 folder")
    parser.add_argument("out_dir", help="folder to write (config.json, model.safetensors, tokenizer files)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is not empty")
    args = parser.parse_args(argv)
    notes = export_hf(args.source, args.out_dir, overwrite=args.overwrite)
    print(f"exported {args.source} -> {args.out_dir}")
    for note in notes:
        print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
