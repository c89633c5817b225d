"""The reading side: converted datasets (local or s3://) served by StreamingDataset as Composer DataSpecs,
collate, and Streaming shared memory."""

import upstream  # noqa: F401 - its import-time work-arounds, before Composer or Streaming is first imported
