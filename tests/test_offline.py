import socket

import pytest
from conftest import NetworkBlocked


def test_connections_off_this_machine_are_refused():
    with socket.socket() as sock, pytest.raises(NetworkBlocked):
        sock.connect(("93.184.215.14", 443))


def test_loopback_connections_still_work():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
