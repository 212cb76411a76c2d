"""Azurite, the Azure Storage emulator, for the tests: `running_azurite()` and the `azurite_connection_string` fixture.

Azurite comes from the project's package.json (`make test` runs `npm ci`). The fixture uses the connection string in
AZURITE_CONNECTION_STRING when it is set, and otherwise starts Azurite's blob service, in memory, on a free loopback
port for the test session.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

AZURITE_BLOB = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "azurite-blob"
HOST = "127.0.0.1"
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development account key, published in its documentation: it opens nothing but the emulator.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(port: int) -> str:
    """The connection string for Azurite's development account on `port`."""
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://{HOST}:{port}/{ACCOUNT};")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def answers(port: int) -> bool:
    """Whether Azurite's blob service (and not some other server) answers on `port`."""
    connection = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        connection.request("GET", "/")
        return connection.getresponse().getheader("Server", "").startswith("Azurite-Blob")
    except OSError:
        return False
    finally:
        connection.close()


def wait_until_ready(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not answers(port):
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {process.returncode}:\n{log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Azurite did not answer on port {port} within {timeout} s:\n"
                               f"{log.read_text(errors='replace')}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_azurite(timeout: float = 30.0) -> Iterator[str]:
    """Run Azurite's blob service in memory on a free loopback port; yield its connection string, then stop it."""
    if not AZURITE_BLOB.exists():
        raise RuntimeError(f"{AZURITE_BLOB} is missing: run `make test`, or `npm install` in {AZURITE_BLOB.parents[2]}")
    port = free_port()
    command = [str(AZURITE_BLOB), "--blobHost", HOST, "--blobPort", str(port), "--inMemoryPersistence", "--silent",
               "--skipApiVersionCheck", "--loose", "--disableTelemetry"]
    with tempfile.TemporaryDirectory(prefix="azurite-") as workdir:
        log = Path(workdir) / "azurite.log"
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            wait_until_ready(process, port, log, timeout)
            yield connection_string(port)
        finally:
            stop(process)


@pytest.fixture(scope="session")
def azurite_connection_string() -> Iterator[str]:
    """A connection string to Azurite: AZURITE_CONNECTION_STRING's, or that of one started for the session."""
    configured = os.environ.get("AZURITE_CONNECTION_STRING")
    if configured:
        yield configured
        return
    with running_azurite() as conn_str:
        yield conn_str
