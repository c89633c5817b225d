"""Our multiple-choice files as an lm-evaluation-harness task: the yaml that makes the harness read a HellaSwag-layout
jsonl (``ctx``, ``endings``, ``label``) as it is, with nothing downloaded. The parity test and
bench/eval_throughput.py write it; a user can too, to run the harness on the same file as ``eval.py --hellaswag``.
"""
from __future__ import annotations

import json
from pathlib import Path

TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {items}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def write_task(folder: Path, task: str, items: Path, cache: Path) -> Path:
    """``folder/<task>.yaml``: the harness task ``task`` reading ``items`` (its datasets cache in ``cache``)."""
    path = folder / f"{task}.yaml"
    path.write_text(TASK_YAML.format(task=task, items=json.dumps(str(items)), cache=json.dumps(str(cache))))
    return path
