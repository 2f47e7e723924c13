"""The test harness's port choice: ports no outgoing connection can take between their choice and their use."""

from __future__ import annotations

import socket

from demo_services.stack.servers import LOOPBACK, _ephemeral_low, free_ports


def test_chosen_ports_are_distinct_free_and_below_the_outgoing_connections_range() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(port < _ephemeral_low() for port in ports)
    for port in ports:  # free: a server can bind each
        with socket.socket() as server:
            server.bind((LOOPBACK, port))


def test_an_outgoing_connection_never_gets_a_chosen_port() -> None:
    """The kernel picks a connection's own port from the ephemeral range, which the chosen ports lie outside."""
    with socket.socket() as listener:
        listener.bind((LOOPBACK, free_ports(1)[0]))
        listener.listen(8)
        chosen = set(free_ports(10))
        clients = [socket.create_connection(listener.getsockname()) for _ in range(8)]
        try:
            assert not chosen & {client.getsockname()[1] for client in clients}
            assert all(client.getsockname()[1] >= _ephemeral_low() for client in clients)
        finally:
            for client in clients:
                client.close()
