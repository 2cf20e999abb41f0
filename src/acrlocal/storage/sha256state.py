"""A SHA-256 whose running state can be saved and resumed elsewhere: :class:`ResumableSha256`.

An upload session that any replica may continue needs its running digest to travel with it. ``hashlib`` cannot
export its state, so this hashes with OpenSSL's ``SHA256_Init``/``SHA256_Update``/``SHA256_Final`` through
``ctypes`` (the same libcrypto and assembly ``hashlib`` uses, as fast; ``ctypes`` releases the GIL during the
call, so large pieces hash on another core from an executor), on a ``SHA256_CTX`` this module owns. The saved form
is portable and small (at most 113 bytes: the eight chaining words, the length in bits, the bytes of the last
partial 64-byte block), independent of OpenSSL's struct layout and of the machine's byte order.

:func:`available` says whether the running libcrypto has those functions and behaves as expected (checked once
against ``hashlib``); where it does not, callers hash again from the stored bytes instead (the slower path
:class:`acrlocal.storage.azure_blobs.AzureBlobStore` falls back to). :class:`StateError` (a ``ValueError``) is
raised for a saved state that does not parse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import struct

from acrlocal.errors import AcrLocalError

_VERSION = 1
_WORDS = 8
_BLOCK = 64


class StateError(AcrLocalError, ValueError):
    """A saved SHA-256 state that is not one :meth:`ResumableSha256.save` wrote."""


class _Ctx(ctypes.Structure):
    # OpenSSL's SHA256_CTX (openssl/sha.h), unchanged since 0.9.8: SHA_LONG is a 32-bit unsigned int.
    _fields_ = [("h", ctypes.c_uint32 * _WORDS), ("Nl", ctypes.c_uint32), ("Nh", ctypes.c_uint32),
                ("data", ctypes.c_uint8 * _BLOCK), ("num", ctypes.c_uint), ("md_len", ctypes.c_uint)]


@functools.cache
def _libcrypto() -> ctypes.CDLL | None:
    for name in ("crypto", "crypto.3", "crypto.1.1"):
        path = ctypes.util.find_library(name)
        if path is None:
            continue
        try:
            lib = ctypes.CDLL(path)
            for fn in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
                getattr(lib, fn).restype = ctypes.c_int
            lib.SHA256_Update.argtypes = [ctypes.POINTER(_Ctx), ctypes.c_void_p, ctypes.c_size_t]
            lib.SHA256_Init.argtypes = [ctypes.POINTER(_Ctx)]
            lib.SHA256_Final.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Ctx)]
            return lib
        except (OSError, AttributeError):
            continue
    return None


@functools.cache
def available() -> bool:
    """Whether states can be saved here: libcrypto has the functions and a saved, resumed hash of a sample gives
    ``hashlib``'s digest."""
    if _libcrypto() is None:
        return False
    sample = bytes(range(256)) * 5
    try:
        for split in (0, 1, 63, 64, 65, 200, len(sample)):
            h = ResumableSha256()
            h.update(sample[:split])
            resumed = ResumableSha256.load(h.save())
            resumed.update(sample[split:])
            if resumed.hexdigest() != hashlib.sha256(sample).hexdigest():
                return False
    except (OSError, ValueError):
        return False
    return True


class ResumableSha256:
    """SHA-256 with :meth:`save` and :meth:`load`. Not thread-safe: one thread updates it at a time."""

    __slots__ = ("_ctx",)

    def __init__(self) -> None:
        lib = _libcrypto()
        if lib is None:
            raise OSError("libcrypto with SHA256_Init is not available")
        self._ctx = _Ctx()
        lib.SHA256_Init(ctypes.byref(self._ctx))

    def update(self, data: bytes | bytearray | memoryview) -> None:
        lib = _libcrypto()
        assert lib is not None
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        if isinstance(data, bytes):
            lib.SHA256_Update(ctypes.byref(self._ctx), data, n)
            return
        if isinstance(data, memoryview) and data.readonly:
            data = data.tobytes()
            lib.SHA256_Update(ctypes.byref(self._ctx), data, n)
            return
        lib.SHA256_Update(ctypes.byref(self._ctx), (ctypes.c_char * n).from_buffer(data), n)

    @property
    def length(self) -> int:
        """Bytes hashed so far."""
        return ((self._ctx.Nh << 32) | self._ctx.Nl) // 8

    def hexdigest(self) -> str:
        """The digest of what was hashed so far (the state itself is left as it was)."""
        lib = _libcrypto()
        assert lib is not None
        copy = _Ctx()
        ctypes.pointer(copy)[0] = self._ctx
        out = ctypes.create_string_buffer(32)
        lib.SHA256_Final(out, ctypes.byref(copy))
        return out.raw.hex()

    def save(self) -> bytes:
        """The state, portable: version, eight big-endian words, the length in bits, then the pending bytes."""
        ctx = self._ctx
        num = int(ctx.num)
        if not 0 <= num < _BLOCK:
            raise StateError(f"SHA-256 state holds {num} pending bytes, expected fewer than {_BLOCK}")
        bits = (ctx.Nh << 32) | ctx.Nl
        return struct.pack(f">B{_WORDS}IQ", _VERSION, *ctx.h, bits) + bytes(ctx.data[:num])

    @classmethod
    def load(cls, saved: bytes) -> ResumableSha256:
        """A hash that goes on from ``saved`` (:class:`StateError` if it is not a state :meth:`save` wrote)."""
        head = struct.calcsize(f">B{_WORDS}IQ")
        if len(saved) < head or saved[0] != _VERSION:
            raise StateError(f"not a saved SHA-256 state ({len(saved)} bytes, version byte "
                             f"{saved[0] if saved else None}); expected version {_VERSION}")
        _, *words, bits = struct.unpack(f">B{_WORDS}IQ", saved[:head])
        pending = saved[head:]
        if len(pending) >= _BLOCK or bits % 8 or (bits // 8) % _BLOCK != len(pending):
            raise StateError(f"saved SHA-256 state is inconsistent: {bits} bits hashed, {len(pending)} pending bytes")
        h = cls()
        ctx = h._ctx
        for i, word in enumerate(words):
            ctx.h[i] = word
        ctx.Nl, ctx.Nh = bits & 0xFFFFFFFF, bits >> 32
        ctypes.memmove(ctx.data, pending, len(pending))
        ctx.num = len(pending)
        return h
