"""Joining a Ray cluster that refuses the driver is one line, not Ray's traceback.

(Seen for real: `ray start --head` with token authentication, then `sweeper run --address` from a
shell without the token. Here `ray.init` is made to fail as it does then, without starting Ray.)"""
from __future__ import annotations

import pytest

from sweeper.engine.session import RaySession
from sweeper.errors import SweeperError


def test_a_cluster_that_cannot_be_joined_is_one_line_naming_the_address(monkeypatch):
    import ray

    def refuse(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6390")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(SweeperError) as err:
        with RaySession("127.0.0.1:6390"):
            pass
    message = str(err.value)
    assert "\n" not in message and message.startswith("--address 127.0.0.1:6390: cannot join this Ray cluster")
    assert "auth_token" in message
