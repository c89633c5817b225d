"""Tools for after (or beside) training: load a run or checkpoint, export to Hugging Face, evaluate (LM metrics,
multiple choice), compare runs. Used by eval.py, generate.py, export_hf.py, plot.py and scripts/."""

import upstream  # noqa: F401 - its import-time work-arounds, before Composer or Streaming is first imported
