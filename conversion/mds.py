"""Streaming's MDSWriter with a leaner shard flush (imported lazily: ``streaming`` imports torch).

Streaming 0.13.0 flushes a shard while still holding every sample: the samples (64 MiB by default), their join, a
second copy with the header in front, then the compressed shard. With the ~0.6 GB that importing streaming costs
(torch), that peak decided whether a conversion fits in 1 GB. This writer joins header and samples in one copy and
lets go of the samples (their pages returned to the OS) before compressing: the same bytes on disk and in
``index.json`` (tested against the stock writer), ~90 MB less at the peak with 64 MiB shards.
"""
from __future__ import annotations

import numpy as np
from streaming import MDSWriter

from core.memory import release_free_memory


class LeanMDSWriter(MDSWriter):
    def encode_joint_shard(self) -> bytes:
        """Byte for byte what MDSWriter.encode_joint_shard returns: sample count, offsets, config, samples."""
        num_samples = np.uint32(len(self.new_samples))
        sizes = list(map(len, self.new_samples))
        offsets = np.array([0] + sizes).cumsum().astype(np.uint32)
        offsets += len(num_samples.tobytes()) + len(offsets.tobytes()) + len(self.config_data)
        return b"".join([num_samples.tobytes(), offsets.tobytes(), self.config_data, *self.new_samples])

    def flush_shard(self) -> None:
        """JointWriter.flush_shard, except that the samples are dropped once joined (the caller resets the rest)."""
        raw_basename, zip_basename = self._name_next_shard()
        raw_data = self.encode_joint_shard()
        samples, self.new_samples = len(self.new_samples), []
        release_free_memory()  # the samples' heap pages, before the compressed copy is allocated
        raw_info, zip_info = self._process_file(raw_data, raw_basename, zip_basename)
        del raw_data
        self.shards.append({"samples": samples, "raw_data": raw_info, "zip_data": zip_info, **self.get_config()})
        future = self.executor.submit(self.cloud_writer.upload_file, zip_basename or raw_basename)
        future.add_done_callback(self.exception_callback)

