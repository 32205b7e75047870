"""Incremental decoders and encoders for the Content-Encodings a page can arrive in.

The gateway puts the banner into compressed pages by decoding the app's body as it streams,
inserting, and encoding again in the same coding (the one the app chose from what the browser
accepted). Every encoder flushes at the end of each chunk, so a streamed page stays streamed.
Brotli and Zstandard come from the ``brotli`` and ``zstandard`` packages; without them a page in
that coding is passed on untouched, as before.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Iterator
from typing import Any, Protocol

# Decoded output comes in pieces of at most this size (zlib and brotli), so a small compressed
# chunk that expands a thousandfold is passed on piece by piece rather than held whole.
PIECE = 256 * 1024


class Codec(Protocol):
    """An encoder of one coding, fed chunk by chunk."""

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Decoder(Protocol):
    """A decoder of one coding: each chunk comes out as pieces of decoded bytes."""

    def pieces(self, data: bytes, last: bool) -> Iterator[bytes]: ...


class DecodeError(ValueError):
    """The app's body is not valid in the coding its Content-Encoding names."""


def content_codings(values: list[bytes]) -> list[bytes]:
    """The codings of every Content-Encoding header, in order, ``identity`` and blanks left out.

    ``Content-Encoding: gzip`` plus ``Content-Encoding: identity`` reads as ``[b"gzip"]``.
    """
    codings = []
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token and token != b"identity":
                codings.append(token)
    return codings


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:  # installed without it: pages in that coding pass on untouched
        return None


def _brotli() -> Any:
    return _optional("brotli")


def _zstandard() -> Any:
    return _optional("zstandard")


def supported(coding: bytes) -> bool:
    """Whether the gateway can decode and re-encode ``coding`` here."""
    if coding in (b"gzip", b"x-gzip", b"deflate"):
        return True
    if coding == b"br":
        return _brotli() is not None
    if coding == b"zstd":
        return _zstandard() is not None
    return False


class _ZlibDecoder:
    __slots__ = ("_inner", "_raw_fallback", "_seen")

    def __init__(self, wbits: int) -> None:
        self._inner = zlib.decompressobj(wbits)
        # HTTP "deflate" is the zlib format, but some servers send raw deflate: read either.
        self._raw_fallback = wbits == zlib.MAX_WBITS
        self._seen = False

    def pieces(self, data: bytes, last: bool) -> Iterator[bytes]:
        while True:
            try:
                out = self._inner.decompress(data, PIECE)
            except zlib.error as exc:
                if self._raw_fallback and not self._seen:
                    self._inner = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._raw_fallback = False
                    continue
                raise DecodeError(f"the body is not valid for its Content-Encoding: {exc}") from None
            self._seen = True
            if out:
                yield out
            data = self._inner.unconsumed_tail
            if not data and len(out) < PIECE:  # a full piece may leave output still pending
                break
        if last:
            yield self._inner.flush()


class _ZlibEncoder:
    __slots__ = ("_inner",)

    def __init__(self, wbits: int) -> None:
        self._inner = zlib.compressobj(6, zlib.DEFLATED, wbits)

    def feed(self, data: bytes) -> bytes:
        return self._inner.compress(data) + self._inner.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._inner.flush(zlib.Z_FINISH)


class _BrotliDecoder:
    __slots__ = ("_inner",)

    def __init__(self) -> None:
        self._inner = _brotli().Decompressor()

    def pieces(self, data: bytes, last: bool) -> Iterator[bytes]:
        inner = self._inner
        try:
            out = bytes(inner.process(data, output_buffer_limit=PIECE))
            # The limit is approximate, and output can still be pending while more input would
            # be accepted: ask again until nothing more comes.
            while out:
                yield out
                if inner.is_finished():
                    break
                out = bytes(inner.process(b"", output_buffer_limit=PIECE))
        except Exception as exc:  # brotli.error is not exported under one name across versions
            raise DecodeError(f"the body is not valid brotli: {exc}") from None


class _BrotliEncoder:
    __slots__ = ("_inner",)

    def __init__(self) -> None:
        # Quality 5: near gzip's speed with brotli's ratio; 11 (the package default) is for static files.
        brotli = _brotli()
        self._inner = brotli.Compressor(mode=brotli.MODE_TEXT, quality=5)

    def feed(self, data: bytes) -> bytes:
        return bytes(self._inner.process(data)) + bytes(self._inner.flush())

    def finish(self) -> bytes:
        return bytes(self._inner.finish())


class _ZstdDecoder:
    __slots__ = ("_inner",)

    def __init__(self) -> None:
        self._inner = _zstandard().ZstdDecompressor().decompressobj()

    def pieces(self, data: bytes, last: bool) -> Iterator[bytes]:
        # zstandard's decompressobj has no output limit: a chunk comes out whole.
        try:
            yield bytes(self._inner.decompress(data))
        except Exception as exc:  # zstandard.ZstdError
            raise DecodeError(f"the body is not valid zstd: {exc}") from None


class _ZstdEncoder:
    __slots__ = ("_block", "_inner")

    def __init__(self) -> None:
        zstandard = _zstandard()
        self._inner = zstandard.ZstdCompressor(level=3).compressobj()
        self._block = zstandard.COMPRESSOBJ_FLUSH_BLOCK

    def feed(self, data: bytes) -> bytes:
        return bytes(self._inner.compress(data)) + bytes(self._inner.flush(self._block))

    def finish(self) -> bytes:
        return bytes(self._inner.flush())


def decoder(coding: bytes) -> Decoder:
    """An incremental decoder for one coding ``supported`` accepts."""
    if coding in (b"gzip", b"x-gzip"):
        return _ZlibDecoder(16 + zlib.MAX_WBITS)
    if coding == b"deflate":
        return _ZlibDecoder(zlib.MAX_WBITS)
    if coding == b"br":
        return _BrotliDecoder()
    if coding == b"zstd":
        return _ZstdDecoder()
    raise ValueError(f"Content-Encoding {coding!r} is not one the gateway decodes; check supported() first")


def encoder(coding: bytes) -> Codec:
    """An incremental encoder for one coding ``supported`` accepts, flushing after every chunk."""
    if coding in (b"gzip", b"x-gzip"):
        return _ZlibEncoder(16 + zlib.MAX_WBITS)
    if coding == b"deflate":
        return _ZlibEncoder(zlib.MAX_WBITS)
    if coding == b"br":
        return _BrotliEncoder()
    if coding == b"zstd":
        return _ZstdEncoder()
    raise ValueError(f"Content-Encoding {coding!r} is not one the gateway encodes; check supported() first")
