"""Downloads of the raw data sets: http(s) and file:// URLs, retries, sha256 checks.

Why a module of its own: Alex-20 (~1.3 M rows) and the Alexandria dumps are large,
so a download must be resumable (skipped when the file is already there with the
right checksum), must never leave a half-written file behind (temp file + rename),
and must survive the transient 5xx / dropped connections of public servers.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

from crystalrl.data.lock import LockMismatch, pin
from crystalrl.io import atomic_path

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed for good (after retries) or its checksum did not match."""


def sha256sum(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (the dumps do not fit in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_once(url: str, part: Path, timeout: float, log_=None) -> str | None:
    """One attempt at `url` into `part`, continuing a partial file with an HTTP Range request
    (a server without ranges answers 200: start over); raise on any failure, keeping `part`.
    Returns the revision the server names (Hugging Face's X-Repo-Commit, else the ETag or Last-Modified)."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        # urllib resolves file:// portably (percent-escapes, host part)
        with urllib.request.urlopen(url, timeout=timeout) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        return None
    import requests  # here, not at the top: the config check imports this module while Snakemake parses

    if scheme not in ("http", "https"):
        raise DownloadError(f"unsupported URL scheme {scheme!r} in {url} (use http, https or file)")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
        revision = r.headers.get("X-Repo-Commit") or r.headers.get("ETag") or r.headers.get("Last-Modified")
        if have and r.status_code == 416:  # nothing left to send: the partial file is whole
            return revision
        r.raise_for_status()
        resumed = have and r.status_code == 206
        if have:
            (log_ or log).info("%s: %s at byte %d", url, "resuming" if resumed else "server ignores Range; starting over",
                               have)
        with open(part, "ab" if resumed else "wb") as dst:
            for block in r.iter_content(1 << 16):  # small blocks: a cut loses at most 64 KiB
                dst.write(block)
    return revision


def _retryable(exc: BaseException) -> bool:
    """Connection problems, timeouts and 5xx are worth another try; 4xx are not."""
    import requests

    if isinstance(exc, requests.HTTPError):
        return exc.response is not None and exc.response.status_code >= 500
    return isinstance(exc, (requests.ConnectionError, requests.Timeout,
                            requests.exceptions.ChunkedEncodingError))


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, lock: str | os.PathLike | None = None,
             retries: int = 3, timeout: float = 60, backoff: float = 2.0) -> Path:
    """Download `url` to `dest` and return `dest`.

    Skips the transfer when `dest` already exists and (if `sha256` is given) has
    that checksum. Streams to `dest.part` and renames it into place only when complete
    and verified. Retries `retries` times after the first try on connection errors,
    timeouts and HTTP 5xx, sleeping `backoff ** attempt` seconds in between; each retry,
    and a later run, continues the partial file with an HTTP Range request, so a cut
    multi-GB transfer does not start from zero. A checksum mismatch raises
    `DownloadError` naming the URL and both hashes, and leaves no file behind.
    """
    dest = Path(dest)
    if dest.is_dir() or dest.name in ("", ".", ".."):
        raise DownloadError(f"cannot download {url} to {dest}: that is a folder, not a file name")
    if dest.exists():
        have = sha256sum(dest)
        if sha256 is None:  # never trusted blindly: the lock knows what it was
            if lock is not None:
                pin(lock, url, dest, have, log=log)
            log.info("%s exists (sha256 %s); skipping download of %s", dest, have, url)
            return dest
        if have == sha256.lower():
            log.info("%s exists with the expected sha256; skipping download", dest)
            return dest
        log.warning("%s exists but its sha256 %s != expected %s; downloading again",
                    dest, have, sha256)

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")  # kept across attempts and runs: the next one resumes it
    last: BaseException | None = None
    for attempt in range(retries + 1):
        try:
            revision = _fetch_once(url, part, timeout)
            got = sha256sum(part)
            if sha256 is not None and got != sha256.lower():
                part.unlink()
                raise DownloadError(f"sha256 mismatch for {url}: expected {sha256.lower()}, got {got}; "
                                    f"the download was discarded")
            if lock is not None:
                try:
                    pin(lock, url, part, got, revision=revision, log=log)
                except LockMismatch as exc:
                    part.unlink()
                    raise DownloadError(str(exc)) from None
            with atomic_path(dest) as tmp:
                os.replace(part, tmp)
            log.info("downloaded %s -> %s (sha256 %s)", url, dest, got)
            return dest
        except DownloadError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified just below
            last = exc
            if not _retryable(exc) or attempt == retries:
                break
            wait = backoff ** attempt
            log.warning("download of %s failed (%s); retry %d/%d in %.1f s (resuming from byte %d)",
                        url, exc, attempt + 1, retries, wait, part.stat().st_size if part.exists() else 0)
            time.sleep(wait)
    raise DownloadError(f"could not download {url} after {attempt + 1} attempt(s): {last}; the part fetched so "
                        f"far is kept in {part} and the next run resumes it") from last


def file_name_of(url: str) -> str:
    """The file name a URL downloads to: the last part of its path, percent-decoded, without
    query or fragment. ValueError when that is no plain file name ("", ".", "..", a folder)."""
    path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
    name = path.rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "\\" in name or "\x00" in name:
        raise ValueError(f"URL {url!r} does not end in a file name (got {name!r}): every URL in "
                         "'data.urls' must name a file, e.g. https://host/path/train.csv")
    return name


def download_into(folder: str | os.PathLike, urls: list[str],
                  sha256: dict[str, str] | None = None, lock: str | os.PathLike | None = None) -> list[Path]:
    """Download every URL into `folder` (file name: `file_name_of(url)`), each checked
    against `sha256[file name]` when given. Returns the files, in URL order."""
    sha256 = dict(sha256 or {})
    names = [file_name_of(url) for url in urls]
    if len(set(names)) < len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"several URLs download to the same file name {dup} in {folder}: {urls}")
    unknown = sorted(set(sha256) - set(names))
    if unknown:
        raise ValueError(f"sha256 given for {unknown}, which no URL downloads (files: {names})")
    return [download(url, Path(folder) / name, sha256=sha256.get(name), lock=lock) for url, name in zip(urls, names)]
