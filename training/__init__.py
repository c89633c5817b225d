"""The training side: config, the ComposerModel around gpt.py, the Trainer assembly, and where a run resumes
from (training/resume/)."""
