"""The guarded outbound client (config/outbound.py, DESIGN §12) against the classic SSRF bypasses.

Real servers on 127.0.0.1; the resolver and the socket opener are replaced only where a test needs a
"public" host (the sandbox has no internet): the guard's own checks always run for real.
"""

from __future__ import annotations

import datetime
import ssl
import time

import pytest

from config import outbound
from config.outbound import OutboundError, address_refusal, fetch
from tests.httpserver import LocalServer

PUBLIC = "93.184.216.34"  # a global unicast address; tests route it to a local server


@pytest.fixture
def srv():
    with LocalServer() as s:
        s.route("/page", body=b"<html><title>Hello</title></html>")
        s.route("/secret", body=b"internal secret")
        s.route("/json", body=b'{"a": 1}', content_type="application/json")
        s.route("/big", body=b"a" * (2 << 20))
        s.chunked("/big-chunked", total=2 << 20)
        s.drip("/drip")
        s.drip("/drip-headers", headers_too=True)
        s.route("/missing", status=404, body=b"nope")
        yield s


@pytest.fixture
def private_ok(settings):
    settings.OUTBOUND_ALLOW_PRIVATE_NETWORKS = True
    return settings


@pytest.fixture
def names(monkeypatch):
    """Map host names to addresses for the guard's resolver: ``names["a.example"] = ["1.2.3.4"]``.
    Records every lookup in ``names.lookups``."""

    class Names(dict):
        lookups: list[str] = []

    table = Names()
    table.lookups = []
    real = outbound.resolve

    def fake(host, port):
        table.lookups.append(host)
        if host in table:
            answer = table[host]
            return list(answer() if callable(answer) else answer)
        return real(host, port)

    monkeypatch.setattr(outbound, "resolve", fake)
    return table


@pytest.fixture
def internet(monkeypatch):
    """Stand in for the internet: connections to ``internet[public_ip] = local_port`` go to that
    local server. Every address the client connects to is recorded in ``internet.connects``."""

    class Net(dict):
        connects: list[str] = []

    net = Net()
    net.connects = []
    real = outbound.open_socket

    def fake(address, port, timeout):
        net.connects.append(address)
        if address in net:
            return real("127.0.0.1", net[address], timeout)
        return real(address, port, timeout)

    monkeypatch.setattr(outbound, "open_socket", fake)
    return net


# --- the address rules -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "100.64.0.1",
        "169.254.169.254",
        "169.254.1.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo carrying 127.0.0.1
        "not-an-ip",
    ],
)
def test_refused_addresses(address):
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_refusal(address) is None


# --- refusals by default -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "2130706433",  # decimal
        "0177.0.0.1",  # octal
        "0x7f.1",  # hex, short form
        "0x7f000001",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "0.0.0.0",
    ],
)
def test_loopback_in_every_spelling_is_refused(srv, host):
    with pytest.raises(OutboundError) as err:
        fetch(f"http://{host}:{srv.port}/secret")
    assert err.value.code == "blocked_address"
    assert srv.requests == []


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/"])
def test_cloud_metadata_is_refused(url):
    with pytest.raises(OutboundError) as err:
        fetch(url, timeout=1)
    assert err.value.code == "blocked_address"


def test_hostname_resolving_to_loopback_is_refused(srv, names):
    names["intranet.example"] = ["127.0.0.1"]
    with pytest.raises(OutboundError) as err:
        fetch(srv.url("/secret", host="intranet.example"))
    assert err.value.code == "blocked_address"
    assert srv.requests == []


def test_one_private_record_among_public_ones_is_refused(srv, names, internet):
    names["mixed.example"] = [PUBLIC, "127.0.0.1"]
    internet[PUBLIC] = srv.port
    with pytest.raises(OutboundError) as err:
        fetch(srv.url("/secret", host="mixed.example"))
    assert err.value.code == "blocked_address"
    assert internet.connects == []


def test_public_host_is_fetched_and_the_host_header_keeps_the_name(srv, names, internet):
    names["news.example"] = [PUBLIC]
    internet[PUBLIC] = srv.port
    res = fetch(f"http://news.example:{srv.port}/page?x=1")
    assert res.status == 200
    assert res.body == b"<html><title>Hello</title></html>"
    assert res.headers["content-type"] == "text/html; charset=utf-8"
    assert res.url == f"http://news.example:{srv.port}/page?x=1"
    assert res.elapsed_ms > 0
    assert internet.connects == [PUBLIC]
    assert srv.requests[0].headers["host"] == f"news.example:{srv.port}"
    assert srv.requests[0].path == "/page?x=1"


def test_redirect_from_a_public_host_to_a_private_one_is_refused(srv, names, internet):
    names["public.example"] = [PUBLIC]
    internet[PUBLIC] = srv.port
    srv.redirect("/go", srv.url("/secret"))
    with pytest.raises(OutboundError) as err:
        fetch(f"http://public.example:{srv.port}/go")
    assert err.value.code == "blocked_address"
    assert srv.paths() == ["/go"]  # the first hop ran; the private one never did


def test_redirect_to_a_name_that_resolves_privately_is_refused(srv, names, internet):
    names["public.example"] = [PUBLIC]
    names["sneaky.example"] = ["10.0.0.7"]
    internet[PUBLIC] = srv.port
    srv.redirect("/go", f"http://sneaky.example:{srv.port}/secret")
    with pytest.raises(OutboundError) as err:
        fetch(f"http://public.example:{srv.port}/go")
    assert err.value.code == "blocked_address"
    assert internet.connects == [PUBLIC]


def test_dns_rebinding_connects_to_the_address_that_was_checked(srv, names, internet):
    """The resolver answers public first and loopback afterwards: a client that looks the name up
    again to connect would reach 127.0.0.1:<port>/secret. We resolve once and connect to the checked
    address (routed here to a different, "public" server)."""
    answers = iter([[PUBLIC], ["127.0.0.1"], ["127.0.0.1"]])
    names["rebind.example"] = lambda: next(answers)
    with LocalServer() as public:
        public.route("/secret", body=b"public content")
        internet[PUBLIC] = public.port
        res = fetch(f"http://rebind.example:{srv.port}/secret")
    assert res.body == b"public content"
    assert names.lookups == ["rebind.example"]
    assert internet.connects == [PUBLIC]
    assert srv.requests == []  # the loopback server never saw a request


# --- caps --------------------------------------------------------------------------------------------
def test_oversize_body_with_content_length_is_refused(srv, private_ok):
    with pytest.raises(OutboundError) as err:
        fetch(srv.url("/big"), max_bytes=1 << 20)
    assert err.value.code == "too_large"


def test_oversize_chunked_body_is_cut_at_the_cap(srv, private_ok):
    with pytest.raises(OutboundError) as err:
        fetch(srv.url("/big-chunked"), max_bytes=1 << 20)
    assert err.value.code == "too_large"
    assert fetch(srv.url("/big-chunked"), max_bytes=4 << 20).body == b"a" * (2 << 20)


@pytest.mark.parametrize("path", ["/drip", "/drip-headers"])
def test_slow_drip_is_stopped_by_the_total_budget(srv, private_ok, path):
    started = time.monotonic()
    with pytest.raises(OutboundError) as err:
        fetch(srv.url(path), timeout=1.0)
    assert err.value.code == "timeout"
    assert time.monotonic() - started < 2.0


def test_content_type_allow_list(srv, private_ok):
    with pytest.raises(OutboundError) as err:
        fetch(srv.url("/json"), allowed_content_types=("text/html",))
    assert err.value.code == "bad_content_type"
    assert fetch(srv.url("/page"), allowed_content_types=("text/html",)).status == 200


def test_http_errors_are_returned_not_raised(srv, private_ok):
    res = fetch(srv.url("/missing"))
    assert (res.status, res.body) == (404, b"nope")


def test_connection_refused(private_ok):
    with LocalServer() as gone:
        port = gone.port
    with pytest.raises(OutboundError) as err:
        fetch(f"http://127.0.0.1:{port}/", timeout=2)
    assert err.value.code == "connect_failed"


# --- redirects ---------------------------------------------------------------------------------------
def test_redirect_limit_and_zero_means_not_followed(srv, private_ok):
    for i in range(4):
        srv.redirect(f"/r{i}", f"/r{i + 1}")
    srv.route("/r4", body=b"end")
    with pytest.raises(OutboundError) as err:
        fetch(srv.url("/r0"), max_redirects=3)
    assert err.value.code == "too_many_redirects"
    res = fetch(srv.url("/r1"), max_redirects=3)
    assert (res.status, res.body, res.url) == (200, b"end", srv.url("/r4"))
    res = fetch(srv.url("/r0"), max_redirects=0)
    assert res.status == 302 and res.headers["location"] == "/r1"


def test_post_body_and_headers_are_sent_and_303_becomes_get(srv, private_ok):
    srv.route("/hook", body=b"ok", content_type="text/plain")
    res = fetch(
        srv.url("/hook"), method="POST", body=b'{"x":1}', headers={"Content-Type": "application/json"}
    )
    assert res.body == b"ok"
    seen = srv.requests[-1]
    assert (seen.method, seen.body, seen.headers["content-type"]) == ("POST", b'{"x":1}', "application/json")
    srv.redirect("/see-other", "/hook", status=303)
    fetch(srv.url("/see-other"), method="POST", body=b"data")
    assert (srv.requests[-1].method, srv.requests[-1].body) == ("GET", b"")


def test_credentials_are_not_forwarded_to_another_origin(srv, private_ok):
    with LocalServer() as other:
        other.route("/land", body=b"x")
        srv.redirect("/away", other.url("/land"))
        fetch(srv.url("/away"), headers={"Authorization": "Bearer s3cret", "X-Trace": "1"})
        assert "authorization" not in other.requests[0].headers
        assert other.requests[0].headers["x-trace"] == "1"
    assert srv.requests[0].headers["authorization"] == "Bearer s3cret"


# --- URLs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "http://user:pw@example.com/",
        "http://exa mple.com/",
        "http://example.com/\r\nX: y",
        "http:///nohost",
        "http://example.com:99999/",
        "",
    ],
)
def test_bad_urls(url):
    with pytest.raises(OutboundError) as err:
        fetch(url)
    assert err.value.code == "bad_url"


def test_require_https_refuses_http_and_redirects_to_http(srv, private_ok):
    with pytest.raises(OutboundError) as err:
        fetch(srv.url("/page"), require_https=True)
    assert err.value.code == "bad_url"


# --- TLS: connect to the checked address, verify the certificate against the NAME --------------------
@pytest.fixture
def tls_pair(tmp_path):
    """A self-signed certificate for ``secure.example`` and a client context that trusts only it."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secure.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("secure.example")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "cert.pem"
    key_pem = tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_pem, key_pem)
    sni_seen: list[str | None] = []
    server_ctx.sni_callback = lambda sock, server_name, ctx: sni_seen.append(server_name)
    client_ctx = ssl.create_default_context(cafile=str(cert_pem))
    return server_ctx, client_ctx, sni_seen


def test_https_verifies_the_name_while_connecting_to_the_checked_address(
    names, internet, monkeypatch, tls_pair
):
    server_ctx, client_ctx, sni_seen = tls_pair
    monkeypatch.setattr(outbound, "ssl_context", lambda: client_ctx)
    names["secure.example"] = [PUBLIC]
    with LocalServer(ssl_context=server_ctx) as tls:
        tls.route("/page", body=b"over tls")
        internet[PUBLIC] = tls.port
        res = fetch(f"https://secure.example:{tls.port}/page", require_https=True)
        assert res.body == b"over tls"
        assert sni_seen == ["secure.example"]
        assert tls.requests[0].headers["host"] == f"secure.example:{tls.port}"
        assert internet.connects == [PUBLIC]
        # The same server under a name its certificate does not carry: verification fails.
        names["other.example"] = [PUBLIC]
        with pytest.raises(OutboundError) as err:
            fetch(f"https://other.example:{tls.port}/page")
        assert err.value.code == "connect_failed"
