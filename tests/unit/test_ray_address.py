"""A Ray cluster address where nothing answers is an error at once, not Ray's retries for many
minutes; an address that answers, or one without a port, goes on to Ray."""
import socket

import pytest

pytest.importorskip("ray", reason="the Ray launcher needs ray (pip install -e '.[ray]')")

from pipeline.serving.launch.base import LaunchError  # noqa: E402
from pipeline.serving.launch.ray_actors import check_reachable  # noqa: E402


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_where_nothing_listens_is_an_error_naming_it():
    port = closed_port()
    with pytest.raises(LaunchError) as e:
        check_reachable(f"127.0.0.1:{port}", timeout_s=5)
    assert f"'127.0.0.1:{port}'" in str(e.value) and "Connection refused" in str(e.value)
    with pytest.raises(LaunchError):
        check_reachable(f"ray://127.0.0.1:{port}", timeout_s=5)


def test_an_address_that_accepts_connections_passes():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}", timeout_s=5)
        check_reachable(f"ray://127.0.0.1:{port}", timeout_s=5)


@pytest.mark.parametrize("address", ["auto", "localhost", "host:port"])
def test_an_address_without_a_port_is_left_to_ray(address):
    check_reachable(address, timeout_s=0.01)
