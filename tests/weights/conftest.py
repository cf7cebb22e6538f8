from __future__ import annotations

from collections.abc import Iterator

import pytest

from seglab.testing.http_server import Server, serving


@pytest.fixture
def server() -> Iterator[Server]:
    """A real HTTP server on 127.0.0.1; put files into ``server.files[path]``."""
    with serving() as state:
        yield state
