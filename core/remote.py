"""The object-store side of the data room: check, list, upload, delete and download under a dataset prefix.

Uploads and listings go through Streaming's own uploader (``S3Uploader``), so conversion writes with the client
settings training reads with: ``S3_ENDPOINT_URL`` selects an S3-compatible store (MinIO, R2, Ceph...), credentials
come from the standard AWS environment variables / config files. Deletes use that uploader's boto3 client (the
library has no delete). Every failure becomes one :class:`~core.errors.RemoteError` naming the URL, the reason
and what to check; nothing here prints a traceback.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from core.errors import OptionError, RemoteError

_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://")


def is_remote(path: str) -> bool:
    """True for URLs Streaming downloads from (s3://, gs://, hf://, ...), false for local folders."""
    return bool(_REMOTE.match(path)) and not path.startswith("file://")


WRITABLE_SCHEMES = ("s3",)
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}
_DENIED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
           "ExpiredToken", "AllAccessDisabled"}
_DELETE_BATCH = 1000  # the S3 DeleteObjects limit


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``; refuses schemes we cannot write and a missing bucket."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in WRITABLE_SCHEMES:
        raise OptionError(f"--out {url}: only s3:// URLs can be written (S3-compatible stores such as MinIO, R2 or "
                          "Ceph too, via S3_ENDPOINT_URL); or give a local folder")
    if not parsed.netloc:
        raise OptionError(f"--out {url} names no bucket; use s3://BUCKET/PREFIX")
    return parsed.netloc, parsed.path.strip("/")


def endpoint() -> str:
    """The endpoint in use, for messages: whoever reads one must know which server said no."""
    return os.environ.get("S3_ENDPOINT_URL") or "unset, so AWS itself"


def _hint() -> str:
    return f"check the bucket, the credentials and S3_ENDPOINT_URL (now {endpoint()})"


def explain(url: str, exc: BaseException) -> str:
    """A short reason for a failed call on ``url``: missing bucket vs missing object, refused credentials,
    unreachable endpoint. botocore's own texts are long and (via Streaming) sometimes wrong: a 403 there reads
    "not found"."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_FOUND or status == 404:
            return _explain_not_found(url)
        if code in _DENIED or status == 403:
            return (f"access denied ({code}): the credentials were refused or lack permission (without "
                    "s3:ListBucket a missing object also reads as 403)")
        return f"{code or status}: {exc.response.get('Error', {}).get('Message', exc)}"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot connect to the endpoint ({exc.kwargs.get('endpoint_url', endpoint())})"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return "no usable AWS credentials (set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    return f"{type(exc).__name__}: {exc}"


def _explain_not_found(url: str) -> str:
    """Tell a missing bucket from a missing object (both are a bare 404 on HEAD)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "s3":
        return "not found"
    try:
        _client().head_bucket(Bucket=parsed.netloc)
    except Exception:  # noqa: BLE001 - any failure here means we cannot tell; say the plainer thing
        return f"bucket {parsed.netloc} does not exist (or is not visible with these credentials)"
    return "no such object in the bucket"


def _client() -> Any:
    """A plain S3 client configured as Streaming's (same endpoint variable, default config)."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL"))


def uploader(url: str, local: str | os.PathLike) -> Any:
    """Streaming's uploader from ``local`` to ``url``; it checks that the bucket answers (HeadBucket)."""
    from streaming.base.storage.upload import CloudUploader

    split_url(url)
    try:
        # Its "exists and not empty" warning is meant for MDSWriter output; our local side is the finished dataset.
        with _quiet(logging.getLogger(CloudUploader.__module__)):
            return CloudUploader.get((str(local), url.rstrip("/")), keep_local=True, exist_ok=True, retry=2)
    except Exception as e:  # noqa: BLE001 - botocore raises many unrelated types
        raise RemoteError(f"cannot use {url}: {explain(url, e)}; {_hint()}") from None


def list_keys(url: str, up: Optional[Any] = None) -> list[str]:
    """Object names under the prefix ``url`` (relative to it, sorted). ``up``: an uploader to reuse."""
    _, prefix = split_url(url)
    up = up or _bare_uploader(url)
    try:
        keys = up.list_objects() or []
    except Exception as e:  # noqa: BLE001
        raise RemoteError(f"cannot list {url}: {explain(url, e)}; {_hint()}") from None
    base = f"{prefix}/" if prefix else ""
    return sorted(k[len(base):] for k in keys if k.startswith(base))


def exists(url: str, up: Optional[Any] = None) -> bool:
    """Whether any object lives under the prefix ``url`` (what "the output is not empty" means in a bucket)."""
    return bool(list_keys(url, up))


def delete_prefix(url: str, first: Iterable[str] = (), up: Optional[Any] = None) -> int:
    """Delete every object under ``url``; the names in ``first`` go before the rest, so a dataset stops looking
    finished (no ``metadata.json``) before any of its shards disappear. Returns the number deleted."""
    bucket, prefix = split_url(url)
    up = up or _bare_uploader(url)
    names = list_keys(url, up)
    head = [n for n in first if n in names]
    rest = [n for n in names if n not in head]
    base = f"{prefix}/" if prefix else ""
    try:
        for batch in [head, *(rest[i:i + _DELETE_BATCH] for i in range(0, len(rest), _DELETE_BATCH))]:
            if batch:
                _delete_keys(up.s3, bucket, [base + n for n in batch])
    except RemoteError:
        raise
    except Exception as e:  # noqa: BLE001
        raise RemoteError(f"cannot delete the old objects under {url}: {explain(url, e)}; {_hint()}") from None
    return len(names)


def delete_keys(url: str, names: Iterable[str]) -> None:
    """Delete these objects (names relative to the prefix ``url``); absent ones are no error (S3's rule)."""
    bucket, prefix = split_url(url)
    names = list(names)
    if not names:
        return
    up = _bare_uploader(url)
    base = f"{prefix}/" if prefix else ""
    try:
        for i in range(0, len(names), _DELETE_BATCH):
            _delete_keys(up.s3, bucket, [base + n for n in names[i:i + _DELETE_BATCH]])
    except RemoteError:
        raise
    except Exception as e:  # noqa: BLE001
        raise RemoteError(f"cannot delete objects under {url}: {explain(url, e)}; {_hint()}") from None


def _delete_keys(s3: Any, bucket: str, keys: list[str]) -> None:
    """One DeleteObjects call; per-key failures come back in the body, not as an exception."""
    resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    errors = resp.get("Errors") or []
    if errors:
        e = errors[0]
        raise RemoteError(f"cannot delete s3://{bucket}/{e.get('Key')} ({e.get('Code')}: {e.get('Message')}); "
                          f"{len(errors)} object(s) left; {_hint()}")


def upload_dir(local: str | os.PathLike, url: str, last: Iterable[str] = (), progress: bool = False) -> list[str]:
    """Upload every file under ``local`` to ``url`` (same relative names); the names in ``last`` go after all
    others, so a reader that waits for ``metadata.json`` never sees a partial dataset. Returns the names."""
    local = Path(local)
    names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    tail = [n for n in last if n in names]
    order = [n for n in names if n not in tail] + tail
    up = uploader(url, local)
    with _UploadProgress(progress, sum((local / n).stat().st_size for n in order)) as bar:
        for name in order:
            try:
                up.upload_file(name)
            except Exception as e:  # noqa: BLE001
                raise RemoteError(f"upload of {name} to {url} failed: {explain(url, e)}; the prefix holds no "
                                  f"finished dataset; {_hint()}, then re-run with --overwrite") from None
            bar((local / name).stat().st_size)
    return order


def download_file(url: str, dest: str | os.PathLike) -> None:
    """Fetch one object with Streaming's downloader (any scheme it knows), replacing ``dest`` atomically so a
    concurrent reader (another rank) sees the old file or the new one, never half of one or none."""
    from streaming.base.storage.download import CloudDownloader

    dest = os.fspath(dest)
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = f"{dest}.{os.getpid()}.tmp"
    if os.path.exists(tmp):
        os.remove(tmp)  # the downloader skips files that exist
    try:
        CloudDownloader.direct_download(url, tmp)
        os.replace(tmp, dest)
    except Exception as e:  # noqa: BLE001
        if os.path.exists(tmp):
            os.remove(tmp)
        raise RemoteError(f"cannot read {url}: {explain(url, e)}") from None


def read_range(url: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of one s3:// object (a ranged GET): a few KiB out of a checkpoint shard of GiBs."""
    bucket, key = split_url(url)
    try:
        body = _client().get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"]
        return body.read()
    except Exception as e:  # noqa: BLE001
        raise RemoteError(f"cannot read {url}: {explain(url, e)}") from None


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Mute a logger's warnings for a moment (restored after)."""
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _bare_uploader(url: str) -> Any:
    """An uploader used only to list or delete: Streaming's needs a local folder, so lend it one briefly."""
    scratch = tempfile.mkdtemp(prefix="remote-")
    try:
        return uploader(url, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _UploadProgress:
    """One tqdm bar over all bytes to upload (shards can be many and large: per-file bars would scroll)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self) -> Callable[[int], None]:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="B", unit_scale=True, desc="uploading", mininterval=0.5)
        return self.bar.update if self.bar is not None else (lambda n: None)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
