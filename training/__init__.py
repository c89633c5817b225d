"""The training side: config, the ComposerModel around gpt.py, the Trainer assembly, and where a run resumes
from (training/resume/)."""

import upstream  # noqa: F401 - its import-time work-arounds, before Composer or Streaming is first imported
