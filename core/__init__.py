"""What the conversion side and the reading side share, and every script needs: the dataset's metadata file,
the tokenizer, remote (``s3://``) URLs, the stream type, the error types, atomic outputs, a run folder's files.

Imports neither torch nor Composer, so a script can check its input before paying for them.
"""
