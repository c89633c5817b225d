"""Metrics (torchmetrics) and Composer callbacks / loggers of ours."""

import upstream  # noqa: F401 - its import-time work-arounds, before Composer or Streaming is first imported
