"""Signed cache files: only files this user's hw1sk wrote for a task are unpickled.

Unpickling runs code, and a results table is only as good as the file it was
read from, so :func:`hw1sk.sweep.run_sweep` never trusts a cache file just
because it is readable.  Each file records the cache key of the task it was
written for and an HMAC-SHA256 of that key and of its pickled payload, made
with a per-user secret (the way Jupyter signs notebooks).  A file is unpickled
only after its format, its key and its HMAC have been checked.

Layout of a cache file::

    MAGIC | version (1 byte) | key length (2 bytes, big-endian) | key (ASCII)
          | HMAC-SHA256 of everything before it and of the payload (32 bytes)
          | payload (a pickle)

The secret is 32 random bytes, stored as hex in ``<config dir>/cache_secret``
with mode 0600, where the config dir is ``$HW1SK_CONFIG_DIR`` if set, else
``$XDG_CONFIG_HOME/hw1sk``, else ``~/.config/hw1sk``.  It is created
atomically on first use; a secret that other users may read or change (mode
wider than 0600, another owner) is replaced by a new one, with a
:class:`CacheWarning`, since files signed with it can no longer be trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import struct
import tempfile
import warnings
from pathlib import Path

__all__ = [
    "CONFIG_DIR_ENV",
    "CacheSigner",
    "CacheWarning",
    "UntrustedCacheFile",
    "config_dir",
    "load_signer",
    "secret_path",
]

#: Environment variable naming the folder that holds the cache secret.
CONFIG_DIR_ENV = "HW1SK_CONFIG_DIR"

MAGIC = b"\x93HW1SK-CACHE"
VERSION = 1
_KEY_LENGTH = struct.Struct(">H")
_DIGEST_SIZE = hashlib.sha256().digest_size
_SECRET_NAME = "cache_secret"
_SECRET_BYTES = 32


class CacheWarning(UserWarning):
    """Issued when the per-run cache cannot be trusted, read or written.

    The sweep always goes on: an untrusted file is recomputed and
    overwritten, and after a failed write the runs are returned uncached.
    """


class UntrustedCacheFile(ValueError):
    """A cache file that is not a complete, signed file for the expected task.

    Its message completes the sentence "The cache file <path> ...".
    """


# -------------------------------------------------------------------- secret


def config_dir():
    """The folder of hw1sk's per-user settings, which holds the cache secret.

    Returns
    -------
    path : pathlib.Path
        ``$HW1SK_CONFIG_DIR`` if set, else ``$XDG_CONFIG_HOME/hw1sk`` (if
        absolute), else ``~/.config/hw1sk``.
    """
    explicit = os.environ.get(CONFIG_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "hw1sk"
    return Path.home() / ".config" / "hw1sk"


def secret_path():
    """The file holding the secret that signs this user's cache files."""
    return config_dir() / _SECRET_NAME


class _BadSecret(Exception):
    """The secret file exists but must not be used; the message says why."""


def _insecure(st):
    """Why a secret file with stat result ``st`` is not private, or ``None``."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if os.name == "nt":  # no POSIX owner and mode bits to check
        return None
    if st.st_uid != os.geteuid():
        return f"belongs to user id {st.st_uid}, not to you, so it may be known to others"
    if st.st_mode & 0o077:
        return (f"has mode {stat.S_IMODE(st.st_mode):#o}, so other users may have "
                "read or changed it")
    return None


def _read_secret(path):
    """The secret stored at ``path``; raises _BadSecret if it must not be trusted."""
    with open(path, "rb") as f:
        problem = _insecure(os.fstat(f.fileno()))
        text = f.read(4 * _SECRET_BYTES)
    if problem:
        raise _BadSecret(problem)
    try:
        secret = bytes.fromhex(text.decode("ascii"))
    except ValueError:  # UnicodeDecodeError is one
        raise _BadSecret("does not hold a hex-encoded key") from None
    if len(secret) < _SECRET_BYTES:
        raise _BadSecret(f"holds a key shorter than {_SECRET_BYTES} bytes")
    return secret


def _create_secret(path, replace):
    """Write a new random secret to ``path`` (mode 0600) atomically and return it.

    Without ``replace``, a secret that another process created meanwhile wins
    and is returned instead, so concurrent first uses agree on one secret.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_bytes(_SECRET_BYTES)
    # mkstemp creates the file with mode 0600, whatever the umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return secret
        try:
            os.link(tmp, path)  # atomic, and fails if the file exists
        except FileExistsError:
            return _read_secret(path)
        except OSError:  # no hard links on this file system
            os.replace(tmp, path)
        return secret
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _load_secret(path):
    """The secret at ``path``, created on first use, replaced if not private."""
    try:
        return _read_secret(path)
    except FileNotFoundError:
        return _create_secret(path, replace=False)
    except _BadSecret as exc:
        problem = str(exc)
    secret = _create_secret(path, replace=True)
    warnings.warn(
        f"The cache secret {path} {problem}. It was replaced by a new secret "
        "(mode 0600); cache files signed with the old one are no longer trusted, "
        "so their runs will be recomputed.",
        CacheWarning,
        stacklevel=3,  # the caller of load_signer
    )
    return secret


def load_signer():
    """The signer of this user's cache files, creating the secret on first use.

    Returns
    -------
    signer : CacheSigner

    Raises
    ------
    OSError
        If the secret can be neither read nor created (e.g. a read-only home).

    Warns
    -----
    CacheWarning
        If the secret file was not private and has been replaced.
    """
    return CacheSigner(_load_secret(secret_path()))


# -------------------------------------------------------------------- signer


def _truncated():
    return UntrustedCacheFile("is truncated")


class CacheSigner:
    """Signs and verifies cache files with this user's secret.

    It pickles (to reach worker processes) but its repr never shows the
    secret.

    Parameters
    ----------
    secret : bytes
        The HMAC key.
    """

    __slots__ = ("_secret",)

    def __init__(self, secret):
        self._secret = bytes(secret)

    def __repr__(self):
        return f"{type(self).__name__}(<secret hidden>)"

    def __getstate__(self):
        return self._secret

    def __setstate__(self, state):
        self._secret = state

    def _mac(self, header, payload):
        mac = hmac.new(self._secret, header, hashlib.sha256)
        mac.update(payload)
        return mac.digest()

    def header(self, key, payload):
        """The bytes to write before ``payload`` in the file of task ``key``.

        Parameters
        ----------
        key : str
            The cache key of the task (ASCII).
        payload : bytes
            The pickled payload.

        Returns
        -------
        header : bytes
            Magic, version, key and the HMAC of all of it and of ``payload``.
        """
        key = key.encode("ascii")
        head = MAGIC + bytes([VERSION]) + _KEY_LENGTH.pack(len(key)) + key
        return head + self._mac(head, payload)

    def verify(self, blob, key):
        """The payload of the file contents ``blob`` if it is signed for ``key``.

        Nothing is unpickled here: the payload is returned as bytes, to be
        unpickled by the caller once this method returned.

        Parameters
        ----------
        blob : bytes
            The whole contents of a cache file.
        key : str
            The cache key of the task the file is expected to hold.

        Returns
        -------
        payload : memoryview
            The pickled payload.

        Raises
        ------
        UntrustedCacheFile
            If ``blob`` is empty, truncated, not an hw1sk cache file (e.g.
            written by an older hw1sk, or a plain pickle), of another format
            version, written for another key, or if its HMAC does not match.
        """
        blob = memoryview(blob)
        if not len(blob):
            raise UntrustedCacheFile("is empty")
        fixed = len(MAGIC) + 1 + _KEY_LENGTH.size
        if len(blob) < len(MAGIC) and MAGIC.startswith(blob):
            raise _truncated()
        if blob[: len(MAGIC)] != MAGIC:
            raise UntrustedCacheFile(
                "is not a signed hw1sk cache file (a plain pickle, another program's "
                "file, or one written by an hw1sk older than the signed cache)")
        if len(blob) < fixed:
            raise _truncated()
        if blob[len(MAGIC)] != VERSION:
            raise UntrustedCacheFile(
                f"has format version {blob[len(MAGIC)]}; this hw1sk reads version {VERSION}")
        (n_key,) = _KEY_LENGTH.unpack_from(blob, len(MAGIC) + 1)
        end = fixed + n_key
        if len(blob) < end + _DIGEST_SIZE:
            raise _truncated()
        file_key = bytes(blob[fixed:end])
        if not hmac.compare_digest(file_key, key.encode("ascii")):
            shown = file_key.decode("ascii", "replace")
            raise UntrustedCacheFile(
                f"was written for another task (key {shown!r}, expected {key!r}); "
                "it was probably copied or renamed")
        digest, payload = blob[end : end + _DIGEST_SIZE], blob[end + _DIGEST_SIZE :]
        if not hmac.compare_digest(self._mac(blob[:end], payload), digest):
            raise UntrustedCacheFile(
                "does not match its signature: it was changed or damaged after it was "
                "written, or signed with another user's or machine's cache secret")
        return payload
