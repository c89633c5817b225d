"""Error classes for everything data: each carries one message that names the problem and the fix."""


class DataError(Exception):
    """Base class: bad input data or a bad dataset folder. Scripts print the message, not a traceback."""


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


class RemoteError(DataError):
    """A bucket cannot be used: missing bucket or object, refused credentials, unreachable endpoint."""
