"""The reading side: converted datasets (local or s3://) served by StreamingDataset as Composer DataSpecs,
collate, and Streaming shared memory."""
