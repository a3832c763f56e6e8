"""Client ID Metadata Documents (Issue 14): a client_id that is an https URL is fetched with SSRF guards. A real
https server on loopback (a throwaway CA from trustme, loopback allowed as only a test setting allows) serves the
documents; the fetch is pinned to the address that was checked, and bounded in size, redirects and time."""

import contextlib
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
import trustme

from mcp_bastion.authserver.authorize import Authorizations
from mcp_bastion.authserver.cimd import MAX_DOCUMENT_BYTES, CimdFetcher, CimdRefused, check_url, target_allowed
from mcp_bastion.authserver.clients import BadClient, Clients
from mcp_bastion.authserver.resources import Resources
from mcp_bastion.store.memory import MemoryStore

pytestmark = pytest.mark.anyio

CALLBACK = "https://app.example.test/callback"


@contextlib.contextmanager
def document_server(documents: dict[str, Any]) -> Iterator[tuple[str, ssl.SSLContext, list[str]]]:
    """An https server on 127.0.0.1 for `localhost` (its base URL, a client context trusting it, the Host headers)."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    hosts: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers.get("Host", ""))
            found = documents.get(self.path)
            if isinstance(found, int):
                self.send_response(found)
                self.send_header("Location", "https://localhost/elsewhere")
                self.end_headers()
                return
            body = found if isinstance(found, bytes) else json.dumps(found).encode()
            self.send_response(200 if found is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    try:
        yield f"https://localhost:{server.server_address[1]}", client_context, hosts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def document(url: str, **extra: Any) -> dict[str, Any]:
    return {"client_id": url, "client_name": "Doc Client", "redirect_uris": [CALLBACK], **extra}


def clients(fetcher: CimdFetcher) -> Clients:
    return Clients(store=MemoryStore(), fetcher=fetcher, unused_ttl_s=60, used_ttl_s=3600)


async def test_a_metadata_document_names_the_client_and_is_cached() -> None:
    documents: dict[str, Any] = {}
    with document_server(documents) as (base, trust, hosts):
        url = f"{base}/client.json"
        documents["/client.json"] = document(url)
        found = clients(CimdFetcher(allow_loopback=True, verify=trust))
        client = await found.find(url)
        assert (client.client_name, client.redirect_uris, client.metadata_document) == (
            "Doc Client",
            (CALLBACK,),
            True,
        )
        await found.find(url)
        assert hosts == [base.removeprefix("https://")]  # fetched once (cached), with the name as Host


async def test_an_authorization_request_from_a_document_client_reaches_consent() -> None:
    """Issue 14 item 2: an authorization request from a document client reaches consent."""
    documents: dict[str, Any] = {}
    with document_server(documents) as (base, trust, _):
        url = f"{base}/client.json"
        documents["/client.json"] = document(url)
        store = MemoryStore()
        known = Clients(
            store=store, fetcher=CimdFetcher(allow_loopback=True, verify=trust), unused_ttl_s=60, used_ttl_s=60
        )
        resources = Resources("https://gw.example.test", ["toolbox"])
        flows = Authorizations(store=store, clients=known, resources=resources, issuer="https://gw.example.test")
        params = {
            "response_type": "code",
            "client_id": url,
            "redirect_uri": CALLBACK,
            "code_challenge": "A" * 43,
            "code_challenge_method": "S256",
            "resource": "https://gw.example.test/mcp/toolbox",
        }
        pending = await flows.start(params)
        assert (pending.client_name, pending.scopes, pending.first_seen) == ("Doc Client", ("server:toolbox",), True)


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        ({"client_id": "https://someone.else/client.json", "redirect_uris": [CALLBACK]}, "is not its URL"),
        ("SELF+secret", "only public clients"),
        ("SELF+http-redirect", "https, or http on a loopback address"),
        (b"x" * (MAX_DOCUMENT_BYTES + 1), "larger than"),
        (b"[1, 2]", "not a JSON object"),
        (302, "answered 302"),
        (None, "answered 404"),
    ],
)
async def test_a_bad_document_is_refused_with_the_reason(served: Any, reason: str) -> None:
    documents: dict[str, Any] = {}
    with document_server(documents) as (base, trust, _):
        url = f"{base}/client.json"
        if served == "SELF+secret":
            served = document(url, token_endpoint_auth_method="client_secret_basic")
        elif served == "SELF+http-redirect":
            served = document(url, redirect_uris=["http://app.example.test/cb"])
        if served is not None:
            documents["/client.json"] = served
        with pytest.raises(BadClient, match=reason):
            await clients(CimdFetcher(allow_loopback=True, verify=trust)).find(url)


async def test_loopback_is_refused_unless_the_test_setting_allows_it() -> None:
    documents: dict[str, Any] = {}
    with document_server(documents) as (base, trust, hosts):
        documents["/client.json"] = document(f"{base}/client.json")
        with pytest.raises(CimdRefused, match="private or local address"):
            await CimdFetcher(verify=trust).document(f"{base}/client.json")
        assert hosts == []  # never connected


@pytest.mark.parametrize(
    "url",
    ["http://app.example.test/client.json", "https://app.example.test/", "https://u:p@app.example.test/c", "ftp://x/y"],
)
def test_only_https_urls_with_a_path_and_no_credentials_are_fetched(url: str) -> None:
    with pytest.raises(CimdRefused):
        check_url(url)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("127.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:10.0.0.1", False),
        ("224.0.0.1", False),
        ("2606:4700::1111", True),
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:5db8:d822::1", True),  # 6to4 of 93.184.216.34
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # teredo
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("64:ff9b::5db8:d822", True),  # NAT64 of 93.184.216.34
        ("64:ff9b:1::a00:1", False),  # local-use NAT64 (RFC 8215): translated by whoever runs it
        ("::a00:1", False),  # IPv4-compatible 10.0.0.1
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
    ],
)
def test_only_global_unicast_targets_are_allowed(address: str, allowed: bool) -> None:
    assert target_allowed(ipaddress.ip_address(address), allow_loopback=False) is allowed


async def test_a_slow_document_host_is_given_up_on() -> None:
    """The time cap holds even when the server accepts and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        fetcher = CimdFetcher(allow_loopback=True, timeout_s=0.3)
        with anyio.fail_after(5), pytest.raises(CimdRefused, match="in time"):
            await fetcher.document(f"https://localhost:{port}/client.json")
    finally:
        listener.close()


def test_the_tls_context_is_built_once_and_verifies() -> None:
    """Loading the CA bundle costs ~20 ms of CPU on the event loop: it is done when the fetcher is made, not per
    fetch (review 6), with certificate and host name checks on."""
    context = CimdFetcher().verify
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA bundle is loaded already
