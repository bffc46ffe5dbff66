"""Fixtures for the integration tests: one started default server shared by the whole run,
and skips for outside programs (swaks, openssl) that are not installed.

The shared server has the `postillion init` configuration with the harness's test settings
(`mynetworks = 127.0.0.1/32`, `smtpd_error_sleep_time = 0`) and the user alice.  Tests that
need other settings make their own server in their module.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from harness import Server, cleanup, make_server


def need(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed")


@pytest.fixture
def swaks(request: pytest.FixtureRequest) -> str:
    request.applymarker(pytest.mark.interop)
    need("swaks")
    return "swaks"


@pytest.fixture
def openssl(request: pytest.FixtureRequest) -> str:
    request.applymarker(pytest.mark.interop)
    need("openssl")
    return "openssl"


@pytest.fixture(scope="session")
def shared_server() -> Iterator[Server]:
    # Byte-exact content checks need cleanup to leave unauthenticated local mail alone;
    # test_submission.py checks the default header completion on its own server.
    server = make_server(main={"local_header_rewrite_clients": "permit_sasl_authenticated"})
    server.add_user("alice")
    server.start()
    try:
        yield server
    finally:
        cleanup(server)


@pytest.fixture
def mta(shared_server: Server) -> Server:
    """The shared default server, with no session of an earlier test still running."""
    shared_server.settle()
    return shared_server
