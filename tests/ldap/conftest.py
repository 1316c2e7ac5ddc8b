"""A throwaway OpenLDAP ``slapd`` for the LDAP connector: free ports, ppolicy, a seeded tree.

Each test gets a fresh server (seeded with ``slapadd``, so it starts in a fraction of a second)
listening on ``ldap://`` (StartTLS) and ``ldaps://`` with a certificate from a CA made for the
session. The tree holds people, nested groups (with a cycle), a locked and a disabled account,
and a few AD-shaped accounts (AD's attribute OIDs) for the ``ad`` flavour's modify shapes.

Without slapd the tests that need it are skipped, unless CI is set: then a missing slapd fails.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ldap3 import BASE, Connection, Server

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-" + os.urandom(6).hex()
SERVICE_DN = f"cn=twokey,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "svc-" + os.urandom(6).hex()
READER_DN = f"cn=reader,ou=services,{SUFFIX}"
READER_PASSWORD = "reader-" + os.urandom(6).hex()
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
GINA_DN = f"uid=gina,{PEOPLE}"
AD_USERS = f"ou=ad,{SUFFIX}"
OLD_PASSWORD = "Old-password-1"
LOCKED_AT = "20240101000000Z"
MODULE_DIR = "/usr/lib/ldap"
SCHEMA_DIR = "/etc/ldap/schema"


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/local/sbin") if (p := Path(d, name)).exists()), None
    )


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require_slapd() -> tuple[str, str]:
    slapd, slapadd = _tool("slapd"), _tool("slapadd")
    if slapd and slapadd and Path(MODULE_DIR, "ppolicy.la").exists():
        return slapd, slapadd
    reason = (
        "OpenLDAP slapd (with the ppolicy module) is not installed: run scripts/install-slapd.sh"
    )
    if _ci():
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(reason)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path
    """A CA that did not sign the server's certificate."""


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA for the session and a certificate for ``localhost`` that it signed."""
    folder = tmp_path_factory.mktemp("ldap-tls")
    ca_key, ca_cert = _ca("twokey test CA")
    _, other_cert = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        ca=folder / "ca.pem",
        cert=folder / "server.pem",
        key=folder / "server.key",
        other_ca=folder / "other-ca.pem",
    )
    files.ca.write_bytes(_pem(ca_cert))
    files.other_ca.write_bytes(_pem(other_cert))
    files.cert.write_bytes(_pem(cert))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    return files


AD_SCHEMA = """\
# The few Active Directory attributes the connector touches, with AD's own OIDs, so the
# "ad" flavour's requests can be checked against a real server. (Debian's msuser.schema
# gives sAMAccountName no equality rule, so it could not be searched.)
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.90 NAME 'unicodePwd'
  EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.96 NAME 'pwdLastSet'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.662 NAME 'lockoutTime'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
  EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user' SUP organizationalPerson STRUCTURAL
  MAY ( sAMAccountName $ unicodePwd $ pwdLastSet $ lockoutTime $ userAccountControl $
        displayName $ mail $ mobile ) )
"""


def _slapd_conf(folder: Path, tls: TlsFiles) -> str:
    """slapd.conf: mdb + ppolicy (its schema is built into the overlay since OpenLDAP 2.5)."""
    (folder / "ad.schema").write_text(AD_SCHEMA)
    schemas = [f"{SCHEMA_DIR}/{name}.schema" for name in ("core", "cosine", "inetorgperson")]
    return "\n".join(
        [
            *(f"include {path}" for path in [*schemas, folder / "ad.schema"]),
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb.la",
            "moduleload ppolicy.la",
            f"pidfile {folder}/slapd.pid",
            f"TLSCACertificateFile {tls.ca}",
            f"TLSCertificateFile {tls.cert}",
            f"TLSCertificateKeyFile {tls.key}",
            "",
            "database mdb",
            f'suffix "{SUFFIX}"',
            f'rootdn "{ROOT_DN}"',
            f"rootpw {ROOT_PASSWORD}",
            f"directory {folder}/data",
            "maxsize 16777216",
            "overlay ppolicy",
            f'ppolicy_default "cn=default,ou=policies,{SUFFIX}"',
            "ppolicy_use_lockout",
            "ppolicy_hash_cleartext",
            # What twokey's service account needs, and no more; the reader may only read.
            f'access to attrs=userPassword,unicodePwd by dn.exact="{SERVICE_DN}" write'
            " by self write by anonymous auth by * none",
            # gina's directory will not let twokey require a new password (a common ACL gap)
            f'access to dn.exact="{GINA_DN}" attrs=pwdReset by * read',
            "access to attrs=pwdReset,pwdAccountLockedTime,lockoutTime,pwdLastSet"
            f' by dn.exact="{SERVICE_DN}" write by * read',
            "access to * by * read",
            "",
        ]
    )


def _entry(dn: str, *lines: str) -> str:
    return "\n".join([f"dn: {dn}", *lines]) + "\n"


def _person(uid: str, name: str, mail: str, *extra: str) -> str:
    return _entry(
        f"uid={uid},{PEOPLE}",
        "objectClass: inetOrgPerson",
        f"uid: {uid}",
        f"cn: {name}",
        f"sn: {name.split()[-1]}",
        f"mail: {mail}",
        f"userPassword: {OLD_PASSWORD}",
        *extra,
    )


def _group(name: str, *members: str) -> str:
    return _entry(
        f"cn={name},{GROUPS}",
        "objectClass: groupOfNames",
        f"cn: {name}",
        *(f"member: {m}" for m in members),
    )


def _ad_user(sam: str, name: str, mail: str, *extra: str) -> str:
    return _entry(
        f"cn={name},{AD_USERS}",
        "objectClass: user",
        f"cn: {name}",
        f"sn: {name.split()[-1]}",
        f"displayName: {name}",
        f"sAMAccountName: {sam}",
        f"mail: {mail}",
        *extra,
    )


def seed_ldif() -> str:
    """The tree every test starts from."""
    ous = ("people", "groups", "services", "policies", "ad")
    entries = [
        _entry(
            SUFFIX,
            "objectClass: dcObject",
            "objectClass: organization",
            "dc: example",
            "o: Example",
        ),
        *(
            _entry(f"ou={ou},{SUFFIX}", "objectClass: organizationalUnit", f"ou: {ou}")
            for ou in ous
        ),
        _entry(
            f"cn=default,ou=policies,{SUFFIX}",
            "objectClass: organizationalRole",
            "objectClass: pwdPolicy",
            "cn: default",
            "pwdAttribute: userPassword",
            "pwdLockout: TRUE",
            "pwdMaxFailure: 3",
            "pwdLockoutDuration: 0",
            "pwdMustChange: TRUE",
            "pwdAllowUserChange: TRUE",
        ),
        _entry(
            SERVICE_DN,
            "objectClass: organizationalRole",
            "objectClass: simpleSecurityObject",
            "cn: twokey",
            f"userPassword: {SERVICE_PASSWORD}",
        ),
        _entry(
            READER_DN,
            "objectClass: organizationalRole",
            "objectClass: simpleSecurityObject",
            "cn: reader",
            f"userPassword: {READER_PASSWORD}",
        ),
        _person("alice", "Alice Liddell", "alice@example.org", "mobile: +44 7700 900123"),
        _person(
            "bob",
            "Bob Locked",
            "bob@example.org",
            f"pwdAccountLockedTime: {LOCKED_AT}",
            "mobile: +44 7700 900111",  # two numbers: no phone of record
            "mobile: +44 7700 900222",
        ),
        _person("erin", "Erin Disabled", "erin@example.org", "pwdAccountLockedTime: 000001010000Z"),
        _person("twin1", "Twin One", "shared@example.org", "mobile: 07700 900333"),
        _person(
            "twin2",
            "Twin Two",
            "shared@example.org",
            "mobile: +44 (7700) 900444",  # one number written two ways
            "mobile: +447700900444",
        ),
        _person("frank", "Frank Two Ids", "frank@example.org", "uid: fjones"),
        _person("star*", "Star Wildcard", "star@example.org"),
        _person("gina", "Gina Nopolicy", "gina@example.org"),
        _person("starlight", "Star Light", "starlight@example.org"),
        _group("helpdesk", f"uid=alice,{PEOPLE}"),
        _group("it-staff", f"cn=helpdesk,{GROUPS}"),
        _group("everyone", f"cn=it-staff,{GROUPS}", f"uid=bob,{PEOPLE}"),
        _group("loop-a", f"cn=loop-b,{GROUPS}", f"uid=alice,{PEOPLE}"),
        _group("loop-b", f"cn=loop-a,{GROUPS}"),
        _group("bob-only", f"uid=bob,{PEOPLE}"),
        # For members(): a name with a filter metacharacter, and a group listing what is not a
        # person under ou=people (a service, an AD-shaped user, a DN that is gone, the OU itself)
        _group("ops*", f"uid=twin1,{PEOPLE}"),
        _group(
            "mixed",
            f"uid=starlight,{PEOPLE}",
            f"uid=erin,{PEOPLE}",
            SERVICE_DN,
            f"cn=Dan Gone,{AD_USERS}",
            f"uid=ghost,{PEOPLE}",
            PEOPLE,
            f"cn=ops*,{GROUPS}",
        ),
        _ad_user(
            "carol",
            "Carol Jones",
            "carol@ad.example.org",
            "userAccountControl: 512",
            "lockoutTime: 133500000000000000",
            "pwdLastSet: 133400000000000000",
            "mobile: +1 425 555 0100",
        ),
        _ad_user("dan", "Dan Gone", "dan@ad.example.org", "userAccountControl: 514"),
        _group("ad-helpdesk", f"cn=Carol Jones,{AD_USERS}", f"cn=Dan Gone,{AD_USERS}"),
        _group("ad-staff", f"cn=ad-helpdesk,{GROUPS}"),
    ]
    return "\n".join(entries)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_listening(proc: subprocess.Popen[bytes], ports: list[int], log: Path) -> None:
    deadline = time.monotonic() + 15
    waiting = list(ports)
    while waiting:
        if proc.poll() is not None:
            raise RuntimeError(f"slapd exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5):
                waiting.pop(0)
                continue
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"slapd did not listen on {ports}:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Slapd:
    """A running test directory and how to reach it."""

    ldap_url: str
    ldaps_url: str
    ca_file: str
    other_ca_file: str
    port: int
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)

    def stop(self) -> None:
        """Stop the server now (to see what the connector does when nobody answers)."""
        self.process.terminate()
        self.process.wait(timeout=10)

    def admin(self) -> Connection:
        """A plain connection bound as the rootdn, for checking what the connector did."""
        conn = Connection(
            Server("localhost", port=self.port),
            user=ROOT_DN,
            password=ROOT_PASSWORD,
            raise_exceptions=True,
        )
        conn.bind()
        return conn

    def read(self, dn: str, *attributes: str) -> dict[str, list[str]]:
        """The given (operational too) attributes of one entry, as lists of strings."""
        conn = self.admin()
        try:
            conn.search(dn, "(objectClass=*)", search_scope=BASE, attributes=list(attributes))
            raw = (conn.response or [])[0]["raw_attributes"]
            return {
                name: [v.decode() if isinstance(v, bytes) else v for v in values]
                for name, values in raw.items()
                if values  # ldap3 lists requested but absent attributes as []
            }
        finally:
            conn.unbind()

    def raw(self, dn: str, attribute: str) -> list[bytes]:
        conn = self.admin()
        try:
            conn.search(dn, "(objectClass=*)", search_scope=BASE, attributes=[attribute])
            return list((conn.response or [])[0]["raw_attributes"].get(attribute, []))
        finally:
            conn.unbind()

    def can_bind(self, dn: str, password: str) -> bool:
        conn = Connection(Server("localhost", port=self.port), user=dn, password=password)
        try:
            return bool(conn.bind())
        finally:
            conn.unbind()


@pytest.fixture
def slapd(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Slapd]:
    """A fresh, seeded slapd on free ports; stopped (and its files removed) after the test."""
    slapd_bin, slapadd_bin = _require_slapd()
    folder = tmp_path / "slapd"
    (folder / "data").mkdir(parents=True)
    conf = folder / "slapd.conf"
    conf.write_text(_slapd_conf(folder, tls_files))
    seed = folder / "seed.ldif"
    seed.write_text(seed_ldif())
    added = subprocess.run(
        [slapadd_bin, "-f", str(conf), "-l", str(seed)], capture_output=True, text=True, check=False
    )
    if added.returncode != 0:
        raise RuntimeError(f"slapadd failed:\n{added.stderr[-2000:]}")
    port, tls_port = _free_port(), _free_port()
    log = folder / "slapd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                slapd_bin,
                "-f",
                str(conf),
                "-d",
                "0",
                "-h",
                f"ldap://localhost:{port}/ ldaps://localhost:{tls_port}/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_listening(proc, [port, tls_port], log)
        yield Slapd(
            ldap_url=f"ldap://localhost:{port}",
            ldaps_url=f"ldaps://localhost:{tls_port}",
            ca_file=str(tls_files.ca),
            other_ca_file=str(tls_files.other_ca),
            port=port,
            process=proc,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
