"""TLS on both brokers: mqtts:// URLs, the local CA, TLS-only listeners, mutual TLS (CN = user name), the CLI.

Clients the project did not write (mosquitto_sub, mosquitto_pub) check what the brokers serve;
see `tests/support/tls.py` for the brokers (Mosquitto runs anonymous with our TLS lines).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from broker.tls import TlsFiles, TlsSetupError, ensure_server_files, issue_client_cert
from mqttlink import BrokerUnreachable, BrokerUrl, BrokerUrlError, check_broker, make_client, new_client_id
from mqttlink.url import broker_url_from, parse_broker_url
from protocol.identity import client_id_for
from protocol.topics import Topics
from tests.support.brokers import MosquittoProcess, free_port, require_mosquitto
from tests.support.tls import KINDS, PUB, SECRET, TlsBroker, run_tool, subscribed, tls_broker
from tests.support.waiting import wait_until


@pytest.fixture(autouse=True)
def _clients_the_project_did_not_write() -> None:
    """These tests check the brokers with Mosquitto's own tools: fail loud if they are missing."""
    require_mosquitto()


# URLs --------------------------------------------------------------------------------------------
def test_an_mqtts_url_defaults_to_port_8883_and_hands_its_tls_files_to_a_child(tmp_path: Path) -> None:
    url = parse_broker_url(f"mqtts://car-aa:s3cret@127.0.0.1?ca={tmp_path}/ca.crt")
    assert (url.tls, url.port, url.ca_file, url.username) == (True, 8883, f"{tmp_path}/ca.crt", "car-aa")
    assert parse_broker_url(url.full()) == url
    assert "s3cret" not in str(url) and parse_broker_url(str(url)).ca_file == url.ca_file
    assert parse_broker_url("mqtt://127.0.0.1").port == 1883


def test_tls_files_need_an_mqtts_url_and_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BrokerUrlError, match=r"needs an mqtts:// broker URL"):
        parse_broker_url("mqtt://127.0.0.1").with_tls_files(ca_file="ca.crt")
    with pytest.raises(BrokerUrlError, match=r"ca=, cert= and key="):
        parse_broker_url("mqtts://127.0.0.1?insecure=1")
    monkeypatch.setenv("FLEETROOM_CA", "relative/ca.crt")
    url = broker_url_from("mqtts://127.0.0.1:8884")
    assert url is not None and url.ca_file == os.path.abspath("relative/ca.crt")
    assert broker_url_from("mqtt://127.0.0.1") == BrokerUrl("127.0.0.1")  # the variable is for TLS URLs only


# certificates ------------------------------------------------------------------------------------
def test_the_broker_makes_a_local_ca_and_a_server_certificate(tmp_path: Path) -> None:
    files, created = ensure_server_files(tmp_path / "tls", ["10.1.2.3", "0.0.0.0"])
    assert created == [files.ca_cert, files.server_cert]
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    assert 3640 <= (ca.not_valid_after_utc - now).days <= 3650
    assert 360 <= (server.not_valid_after_utc - now).days <= 365
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.1.2.3"}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    for key in (files.ca_key, files.server_key):
        assert key.stat().st_mode & 0o777 == 0o600


def test_valid_files_are_reused_and_a_server_certificate_for_other_hosts_is_issued_again(tmp_path: Path) -> None:
    files, _ = ensure_server_files(tmp_path)
    ca, server = files.ca_cert.read_bytes(), files.server_cert.read_bytes()
    assert ensure_server_files(tmp_path)[1] == []
    assert (files.ca_cert.read_bytes(), files.server_cert.read_bytes()) == (ca, server)
    assert ensure_server_files(tmp_path, ["192.168.7.7"])[1] == [files.server_cert]
    assert files.ca_cert.read_bytes() == ca and files.server_cert.read_bytes() != server


def test_a_ca_that_cannot_be_used_is_one_line_and_never_overwritten(tmp_path: Path) -> None:
    files, _ = ensure_server_files(tmp_path)
    files.ca_cert.write_text("not a certificate\n")
    with pytest.raises(TlsSetupError, match="cannot use the CA") as caught:
        ensure_server_files(tmp_path)
    assert "\n" not in str(caught.value) and files.ca_cert.read_text() == "not a certificate\n"
    files.ca_cert.unlink()
    with pytest.raises(TlsSetupError, match=r"ca\.crt is missing"):
        issue_client_cert(tmp_path, "car-aa")
    with pytest.raises(TlsSetupError, match="not a fleet user name"):
        issue_client_cert(tmp_path, "../car")


# TLS on both brokers ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_mosquitto_sub_receives_over_tls_what_a_fleetroom_client_publishes(
    kind: str, topics: Topics, tmp_path: Path
) -> None:
    async with tls_broker(kind, topics, tmp_path) as broker:
        topic = topics.telemetry("car-aa")
        async with subscribed(broker.client_flags(), topic) as sub:
            async with make_client(broker.url(), new_client_id("tls-pub")) as client:
                await client.publish(topic, b"over-tls", qos=1)
            await sub.until(lambda line: line == f"{topic} over-tls", "the message")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_plain_text_connection_to_the_tls_port_is_refused(kind: str, topics: Topics, tmp_path: Path) -> None:
    async with tls_broker(kind, topics, tmp_path) as broker:
        code, out = await run_tool(PUB, "-h", "127.0.0.1", "-p", str(broker.port), "-t", topics.telemetry("car-aa"),
                                   "-m", "plain", "-V", "mqttv311", "-q", "1")
        assert code != 0, out
        code, out = await run_tool(PUB, *broker.client_flags(), "-t", topics.telemetry("car-aa"), "-m", "tls")
        assert code == 0, out  # the same port, over TLS


@pytest.mark.parametrize("kind", KINDS)
async def test_a_wrong_ca_fails_with_one_line_naming_the_certificate_problem(
    kind: str, topics: Topics, tmp_path: Path
) -> None:
    other, _ = ensure_server_files(tmp_path / "other-ca")
    async with tls_broker(kind, topics, tmp_path) as broker:
        with pytest.raises(BrokerUnreachable) as caught:
            await check_broker(broker.url(ca=other.ca_cert))
    message = str(caught.value)
    assert "\n" not in message
    assert "TLS with the MQTT broker at mqtts://127.0.0.1" in message
    assert "not signed by the CA" in message and "certificate verify failed" in message


# mutual TLS -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
async def test_mutual_tls_refuses_a_client_without_a_certificate(kind: str, topics: Topics, tmp_path: Path) -> None:
    async with tls_broker(kind, topics, tmp_path, secret=SECRET, require_client_cert=True) as broker:
        issue_client_cert(tmp_path / "tls", "car-aa")
        topic = topics.telemetry("car-aa")
        flags = ["-t", topic, "-q", "1"]
        code, out = await run_tool(PUB, *broker.client_flags("car-aa"), *flags, "-m", "no-cert")
        assert code != 0, out
        code, out = await run_tool(PUB, *broker.client_flags("car-aa", "car-aa"), *flags, "-m", "cert")
        assert code == 0, out
        async with make_client(broker.url("car-aa", cert=tmp_path / "tls" / "clients"), client_id_for("car-aa")):
            pass  # fleetroom's own client, with the certificate of its user from a directory
        with pytest.raises(BrokerUnreachable) as caught:
            await check_broker(broker.url("car-aa"), client_id_for("car-aa"), timeout=2)
    # Mosquitto says why (a TLS alert); amqtt closes without a word, so the client says what to suspect
    assert "client certificate" in str(caught.value), caught.value


@pytest.mark.parametrize("kind", KINDS)
async def test_a_certificate_for_another_user_is_refused(kind: str, topics: Topics, tmp_path: Path) -> None:
    async with tls_broker(kind, topics, tmp_path, secret=SECRET, require_client_cert=True) as broker:
        for name in ("car-aa", "car-bb"):
            issue_client_cert(tmp_path / "tls", name)
        flags = ["-t", topics.telemetry("car-aa"), "-q", "1"]
        code, out = await run_tool(PUB, *broker.client_flags("car-aa", "car-bb"), *flags, "-m", "forged")
        assert code != 0 and "not authori" in out.lower(), out
        code, out = await run_tool(PUB, *broker.client_flags("car-aa", "car-aa"), *flags, "-m", "own")
        assert code == 0, out  # the same login with its own certificate


# the command line -------------------------------------------------------------------------------
async def test_fleetroom_broker_tls_serves_only_tls_and_says_where_the_ca_is(topics: Topics, tmp_path: Path) -> None:
    port_file, tls_dir = tmp_path / "port", tmp_path / "tls"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetroom", "broker", "--tls", "--tls-dir", str(tls_dir), "--port", "0",
        "--port-file", str(port_file), "--anonymous", "--topic-prefix", topics.prefix,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        await wait_until(lambda: port_file.exists() and port_file.read_text().strip() != "", timeout=30,
                         what="the broker's port file")
        first = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        hint = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode()
        port = int(port_file.read_text())
        assert f"listening on mqtts://127.0.0.1:{port}" in first and "TLS only" in first
        assert f"--broker mqtts://127.0.0.1:{port} --ca-file {tls_dir / 'ca.crt'}" in hint
        assert (tls_dir / "ca.key").stat().st_mode & 0o777 == 0o600
        topic = topics.telemetry("car-aa")
        code, out = await run_tool(PUB, "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", "x", "-q", "1")
        assert code != 0, out
        code, out = await run_tool(PUB, "-h", "127.0.0.1", "-p", str(port), "--cafile", str(tls_dir / "ca.crt"),
                                   "-t", topic, "-m", "x", "-q", "1")
        assert code == 0, out
    finally:
        proc.terminate()
        await proc.wait()


async def test_write_mosquitto_config_with_tls(topics: Topics, tmp_path: Path) -> None:
    """The generated, secured config (passwords, ACL) with TLS: an observer reads what a car sends over mqtts."""
    port, out_dir, secret_file = free_port(), tmp_path / "mosq", tmp_path / "secret"
    secret_file.write_text("fleet-secret\n")
    code, out = await run_tool(
        sys.executable, "-m", "fleetroom", "broker", "--write-mosquitto-config", str(out_dir), "--tls",
        "--tls-dir", str(tmp_path / "tls"), "--port", str(port), "--user", "car-aa", "--secret-file",
        str(secret_file), "--topic-prefix", topics.prefix,
    )
    assert code == 0, out
    conf = (out_dir / "mosquitto.conf").read_text()
    assert f"cafile {tmp_path / 'tls' / 'ca.crt'}" in conf and "tls_version tlsv1.2" in conf
    assert f"--broker mqtts://127.0.0.1:{port}" in out
    proc = MosquittoProcess(out_dir, port)
    await proc.start()
    try:
        broker = TlsBroker("mosquitto", port, TlsFiles(tmp_path / "tls"), b"fleet-secret")
        async with subscribed(broker.client_flags("observer"), topics.all_vehicles()) as sub:
            async with make_client(broker.url("car-aa"), client_id_for("car-aa")) as car:
                await car.publish(topics.telemetry("car-aa"), b"sealed", qos=1)
            await sub.until(lambda line: line.endswith(" sealed"), "the car's telemetry")
    finally:
        await proc.stop()


async def test_fleetroom_certs_issue_and_its_bad_input(tmp_path: Path) -> None:
    code, out = await run_tool(sys.executable, "-m", "fleetroom", "certs", "issue", "car-aa", "--tls-dir",
                               str(tmp_path / "tls"))
    assert code == 0, out
    cert = x509.load_pem_x509_certificate((tmp_path / "tls" / "clients" / "car-aa.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "car-aa"
    assert (tmp_path / "tls" / "clients" / "car-aa.key").stat().st_mode & 0o777 == 0o600
    code, out = await run_tool(sys.executable, "-m", "fleetroom", "certs", "issue", "Car AA", "--tls-dir",
                               str(tmp_path / "tls"))
    assert code == 2 and len(out.strip().splitlines()) == 1 and "not a fleet user name" in out, out
    code, out = await run_tool(sys.executable, "-m", "fleetroom", "submit", "--broker", "mqtt://127.0.0.1:1",
                               "--ca-file", "ca.crt", "--name", "j", "--work", "1", "--shards", "1", "--min-tops", "1")
    assert code == 2 and "needs an mqtts:// broker URL" in out, out
    code, out = await run_tool(sys.executable, "-m", "fleetroom", "submit", "--broker", "mqtts://127.0.0.1:1",
                               "--ca-file", str(tmp_path / "nope.crt"), "--name", "j", "--work", "1", "--shards", "1",
                               "--min-tops", "1")
    assert code == 2 and "cannot use CA file" in out and "No such file" in out, out
