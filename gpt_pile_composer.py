"""Train a GPT-2 on a converted MDS dataset with Composer.

    python gpt_pile_composer.py yamls/tiny.yaml [key=value ...]
    composer -n 2 gpt_pile_composer.py yamls/gpt2.yaml run_name=my-run

Re-running with the same ``run_name`` resumes from the latest checkpoint in the run folder. A second process on a run
folder that a live run holds is refused (or waits, ``run_lock_wait``): see training/resume/lock.py.
"""
from __future__ import annotations

import sys

from core.cli import exit_fast, fail, reports_errors
from core.metadata import check_local_datasets
from training.config import TrainConfig, load_config

USAGE = "usage: gpt_pile_composer.py CONFIG.yaml [key=value ...]"


@reports_errors
def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or "=" in argv[0]:
        print(USAGE, file=sys.stderr)
        return 2
    cfg = load_config(argv[0], argv[1:])  # config: checked before torch and Composer load, so a typo fails fast
    check_local_datasets(cfg.data.roots(), cfg.data.tokenizer)  # as is every local dataset folder
    return train(cfg)


def train(cfg: TrainConfig) -> int:
    from composer.utils import dist

    from core.errors import CheckpointError
    from training.compile import check_compiler
    from training.resume import prepare_resume
    from training.resume.lock import run_lock
    from training.trainer import (
        build_data,
        build_model,
        build_trainer,
        describe_run,
        fit,
        init_distributed,
        name_run,
        prepare_run_dir,
    )

    device = init_distributed(cfg)
    check_compiler(cfg.compile, device)                                 # compile.enabled: inductor can build
    autoresume = name_run(cfg)
    with run_lock(cfg):                                                 # one run, one writer, before any write
        prepare_run_dir(cfg)
        data = build_data(cfg)                                          # data
        resuming = prepare_resume(cfg, autoresume)                      # checkpoint to resume from, if any
        model = build_model(cfg, data, resuming, device)                # model
        trainer = build_trainer(cfg, model, data, device, autoresume)   # trainer
        if dist.get_global_rank() == 0:
            print(describe_run(cfg, model, data, device), flush=True)
        try:
            fit(trainer, cfg)                                           # fit
        except CheckpointError as e:  # the bucket stopped the run: say so while the trainer still closes
            return fail(e)
        finally:
            trainer.close()
    return 0


if __name__ == "__main__":
    exit_fast(main(sys.argv[1:]))  # sys.exit's, less ~0.7 s of module teardown (core/cli.py)
