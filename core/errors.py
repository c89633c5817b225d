"""Every error a user can cause, under one root: :class:`UserFacingError`.

Each carries one message that names the problem and the fix. Every script catches the root and prints
``error: <message>`` with exit code 2, never a traceback (:func:`core.cli.fail`). Anything else that escapes is a
bug of ours and keeps its traceback.
"""


class UserFacingError(Exception):
    """Root: a message for the user (the problem and the fix), printed as one ``error:`` line."""


class ConfigError(UserFacingError):
    """A bad yaml, an unknown key, a wrong type or an inconsistent setting; the message says the fix."""


class DataError(UserFacingError):
    """Bad input data or a bad dataset folder."""


class InputError(DataError):
    """A source file cannot be read as documents (missing, empty, not JSON, no text key, not UTF-8...)."""


class TokenizerError(DataError):
    """The tokenizer spec cannot be resolved, or the tokenizer lacks what we need (an EOS token)."""


class MetadataError(DataError):
    """A dataset folder has no (or an unreadable / incompatible) metadata file."""


class OptionError(DataError):
    """A command-line option is out of range (--seq-len, --val-fraction, --compression...)."""


class OutputExistsError(DataError):
    """The conversion output is not empty and --overwrite was not given."""


class DamagedShardError(DataError):
    """A shard whose bytes are not what conversion wrote (a hash mismatch, or its compressor cannot read it)."""


class RemoteError(DataError):
    """A bucket cannot be used: missing bucket or object, refused credentials, unreachable endpoint."""


class CheckpointError(UserFacingError):
    """A run folder or checkpoint that cannot be loaded or saved; the message names the file and the fix."""


class HFError(CheckpointError):
    """A Hugging Face model that cannot be found or cannot be represented by gpt.py; the message says why."""


class LossSpikeError(UserFacingError):
    """Training stopped on a loss spike or NaN it could not roll back from (``spike.max_rollbacks`` used up, or no
    checkpoint before the spike); ``latest`` names the last good checkpoint."""


class RunFolderError(UserFacingError):
    """A folder given as a run folder that lacks what training writes there (config.yaml, metrics.jsonl...)."""


class RunLockedError(UserFacingError):
    """Another live process trains the same run folder; the message names its host and PID and the ways forward."""


class ResumeMismatchError(UserFacingError):
    """Resuming would silently change the run; the message lists what changed and what to do."""


class EvalError(UserFacingError):
    """A model and dataset that cannot be evaluated together, or a bad option; the message says the fix."""


class HellaSwagError(EvalError):
    """A line of a multiple-choice file that is not ``{"ctx": str, "endings": [str, ...], "label": int}``."""


class DeviceError(UserFacingError):
    """A ``--device`` that is not cpu, cuda or cuda:N, or names a CUDA device this machine does not have."""


class PromptError(UserFacingError):
    """A prompt the model cannot take (too long for its context, or ids outside its vocab)."""


class UpstreamVersionError(UserFacingError):
    """The installed Composer or Streaming is not the version our work-arounds were written and tested for."""
