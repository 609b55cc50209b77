"""FETCH: a frame buffer streamed as ``<xx:`` + 1024-byte blocks, optionally paced.

Blocks are framed with numpy a few thousand at a time: one Python-level operation per
chunk instead of per block keeps a 100 MB frame at several hundred MB/s on loopback,
and a chunk is small enough that a frame never needs a second full-size copy.

A bandwidth cap (bits per second on the wire, headers included) models a real link
(gigabit Ethernet).  It is kept with one sleep per chunk of about 10 ms of traffic,
taken *before* the chunk is written, until the time the whole chunk would have taken
at the cap: the last byte then leaves no earlier than ``bytes * 8 / cap`` after the
start, and the coarse sleeps cost nothing per block.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BLOCK_SIZE", "as_le_bytes", "frame_blocks", "stream_blocks"]

BLOCK_SIZE = 1024
_HEADER = 4  # "<xx:"
_CHUNK_BLOCKS = 4096
_PACED_CHUNK_SECONDS = 0.01


def as_le_bytes(data: npt.NDArray[Any] | None) -> npt.NDArray[np.uint8]:
    """A buffer's bytes as the controller sends them: little-endian, row-major."""
    if data is None:
        return np.zeros(0, dtype=np.uint8)
    little = data.astype(data.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).reshape(-1).view(np.uint8)


def frame_blocks(
    raw: npt.NDArray[np.uint8], header: bytes, first: int, count: int
) -> npt.NDArray[np.uint8]:
    """Blocks ``first .. first+count`` as one (count, 4 + 1024) array, zero padded."""
    out = np.empty((count, _HEADER + BLOCK_SIZE), dtype=np.uint8)
    out[:, :_HEADER] = np.frombuffer(header, dtype=np.uint8)
    payload = out[:, _HEADER:]
    start = first * BLOCK_SIZE
    stop = min(len(raw), start + count * BLOCK_SIZE)
    full, rest = divmod(max(0, stop - start), BLOCK_SIZE)
    if full:
        payload[:full] = raw[start : start + full * BLOCK_SIZE].reshape(full, BLOCK_SIZE)
    if rest:
        payload[full, :rest] = raw[start + full * BLOCK_SIZE : stop]
        payload[full, rest:] = 0
        full += 1
    payload[full:] = 0
    return out


def _chunk_blocks(limit_bps: float | None) -> int:
    if limit_bps is None:
        return _CHUNK_BLOCKS
    per_chunk = limit_bps / 8 * _PACED_CHUNK_SECONDS / (_HEADER + BLOCK_SIZE)
    return max(1, min(_CHUNK_BLOCKS, int(per_chunk)))


async def stream_blocks(
    writer: asyncio.StreamWriter,
    raw: npt.NDArray[np.uint8],
    cid: str,
    blocks: int,
    limit_bps: Callable[[], float | None],
) -> None:
    """Write ``blocks`` framed blocks of ``raw``; ``limit_bps()`` is re-read every chunk.

    Re-reading the cap lets a test change it mid-stream; the pacing deadline carries
    over, so the average rate stays right across the change.
    """
    header = f"<{cid}:".encode("latin-1")
    deadline = time.monotonic()
    first = 0
    while first < blocks:
        limit = limit_bps()
        count = min(_chunk_blocks(limit), blocks - first)
        chunk = frame_blocks(raw, header, first, count)
        if limit is not None:
            deadline = max(deadline, time.monotonic() - _PACED_CHUNK_SECONDS)
            deadline += chunk.nbytes * 8 / limit
            delay = deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        # One flat byte view: the transport slices what it could not send by bytes,
        # which a 2-D view would get wrong.
        writer.write(chunk.reshape(-1).data)
        await writer.drain()
        first += count
