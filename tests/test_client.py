"""The asyncio transport against misbehaving peers (real TCP servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from devices.archon.client import ArchonClient
from devices.archon.errors import ArchonConnectionError, ArchonProtocolError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _replying(reply: Callable[[bytes], bytes]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(reply(line))
            await writer.drain()
        writer.close()

    return handler


async def test_a_reply_with_an_id_nobody_sent_is_a_protocol_error(
    serve: Callable[[Handler], Awaitable[int]],
) -> None:
    port = await serve(_replying(lambda line: b"<FE\n"))
    async with ArchonClient("127.0.0.1", port, timeout=2) as client:
        with pytest.raises(ArchonProtocolError, match="FE that nobody sent"):
            await client.send("STATUS")
        with pytest.raises(ArchonConnectionError, match="unusable"):
            await client.send("STATUS")
        await client.reconnect()
        assert client.connected


async def test_garbage_fails_the_waiting_command_with_the_raw_bytes(
    serve: Callable[[Handler], Awaitable[int]],
) -> None:
    port = await serve(_replying(lambda line: b"HELLO WORLD\n"))
    async with ArchonClient("127.0.0.1", port, timeout=2) as client:
        with pytest.raises(ArchonProtocolError) as info:
            await client.send("STATUS")
        assert info.value.raw.startswith(b"HELLO")


async def test_a_peer_that_hangs_up_fails_the_command_at_once(
    serve: Callable[[Handler], Awaitable[int]],
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    port = await serve(hang_up)
    async with ArchonClient("127.0.0.1", port, timeout=5) as client:
        with pytest.raises(ArchonConnectionError, match="lost"):
            await asyncio.wait_for(client.send("STATUS"), 2)


async def test_replies_are_matched_by_id_even_out_of_order(
    serve: Callable[[Handler], Awaitable[int]],
) -> None:
    async def reversed_pair(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first, second = await reader.readline(), await reader.readline()
        for line in (second, first):
            writer.write(b"<" + line[1:3] + b"ECHO" + line[3:-1] + b"\n")
        await writer.drain()
        await reader.read()

    port = await serve(reversed_pair)
    async with ArchonClient("127.0.0.1", port, timeout=2) as client:
        a, b = await asyncio.gather(client.send("ONE"), client.send("TWO"))
    assert (a, b) == ("ECHOONE", "ECHOTWO")
