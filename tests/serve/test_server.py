"""The uvicorn server's socket: a taken port is one clear error before the model loads. (Its
limits on idle and excess connections are tested in tests/hostile/test_server_inputs.py.)"""

import pytest

from tinygpt.errors import ConfigError
from tinygpt.serve.server import bind_socket


def test_a_taken_port_is_one_clear_error():
    taken = bind_socket("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
    finally:
        taken.close()
