"""Alpaca discovery, by unicast only: ask one named host which port its API is on.

The protocol sends ``alpacadiscovery1`` by UDP to port 32227 and reads back
``{"AlpacaPort": N}``. It is usually broadcast; here it never is. A broadcast or
multicast leaves the machine and reaches every device on the network, which these
machines must not do (shared/design/alpaca.md), so :func:`discover` takes one literal
IP address and refuses anything that could reach more than one host:

* names (``localhost``, ``camera.local``): resolving one could return any address;
* multicast, unspecified (``0.0.0.0``, ``::``) and the limited broadcast address;
* IPv4 addresses ending in ``.255``: without the netmask we cannot tell a host from a
  directed broadcast, so we refuse what could be one.

The socket never gets ``SO_BROADCAST`` either, so the kernel itself refuses a send to
a broadcast address that slipped through. alpyca's ``discovery.search_ipv4`` is not
used: it broadcasts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from dataclasses import dataclass

from devices.alpaca.errors import (
    AlpacaConnectionError,
    AlpacaProtocolError,
    AlpacaTimeoutError,
)

DISCOVERY_PORT = 32227
DISCOVERY_MESSAGE = b"alpacadiscovery1"


@dataclass(frozen=True, slots=True)
class DiscoveredServer:
    """An Alpaca server that answered: its address and the port of its HTTP API."""

    host: str
    alpaca_port: int


def unicast_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``host`` as one IP address that reaches exactly one host, or ValueError."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"discovery needs a literal IP address, not {host!r} (names are not resolved)"
        ) from None
    if address.is_multicast:
        raise ValueError(f"{host} is a multicast address; discovery is unicast only")
    if address.is_unspecified:
        raise ValueError(f"{host} is the unspecified address; discovery is unicast only")
    if isinstance(address, ipaddress.IPv4Address) and (
        address == ipaddress.IPv4Address("255.255.255.255") or address.packed[-1] == 255
    ):
        raise ValueError(f"{host} is or may be a broadcast address; discovery is unicast only")
    return address


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.reply: asyncio.Future[bytes] = loop.create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


async def discover(
    host: str, port: int = DISCOVERY_PORT, *, timeout: float = 2.0
) -> DiscoveredServer:
    """Ask ``host`` (a literal IP address) for its Alpaca port, by one unicast datagram.

    Raises ValueError for an address that is not unicast, :class:`AlpacaTimeoutError`
    when nothing answers in ``timeout`` seconds (UDP gives no other sign of a host
    without a discovery responder), :class:`AlpacaConnectionError` when the host
    refuses (ICMP port unreachable), :class:`AlpacaProtocolError` for a bad answer.
    """
    address = unicast_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not a UDP port")
    label = f"Alpaca discovery at {host}:{port}"
    member = DISCOVERY_MESSAGE.decode()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _OneReply, remote_addr=(str(address), port)
    )
    try:
        transport.sendto(DISCOVERY_MESSAGE)
        async with asyncio.timeout(timeout):
            data = await protocol.reply
    except TimeoutError as exc:
        raise AlpacaTimeoutError(timeout, device=label, member=member) from exc
    except OSError as exc:
        raise AlpacaConnectionError(
            f"{type(exc).__name__}: {exc}", device=label, member=member
        ) from exc
    finally:
        transport.close()
    try:
        answer = json.loads(data)
        alpaca_port = answer["AlpacaPort"]
    except (ValueError, TypeError, KeyError) as exc:
        raise AlpacaProtocolError(
            'discovery answer is not {"AlpacaPort": N}', raw=data, device=label, member=member
        ) from exc
    if not isinstance(alpaca_port, int) or isinstance(alpaca_port, bool):
        raise AlpacaProtocolError(
            "AlpacaPort is not an integer", raw=data, device=label, member=member
        )
    if not 0 < alpaca_port < 65536:
        raise AlpacaProtocolError(
            f"AlpacaPort {alpaca_port} is not a TCP port", raw=data, device=label, member=member
        )
    return DiscoveredServer(host=str(address), alpaca_port=alpaca_port)
