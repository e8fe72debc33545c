"""Generate the local cluster's PKI with the ``openssl`` command-line tool.

A CA, the apiserver's serving certificate, one client certificate per identity
(admin, kube-controller-manager, kube-scheduler, kwok), the service-account
signing key pair, and a separate front-proxy CA. Nothing is signed by the
front-proxy CA: it only exists so the apiserver publishes a requestheader CA, without
which kube-controller-manager and kube-scheduler log an error about the missing
``requestheader-client-ca-file`` every few seconds.

The ``openssl`` CLI is on every project machine, which keeps this package free of a
cryptography dependency.

EC P-256 keys are used for certificates because generating them is instant, while
RSA keygen would add noticeable time to a cold ``up``; the service-account key is
RSA 2048 because RS256 is what every token consumer understands.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CA_DAYS = 3650
LEAF_DAYS = 825

# Names the apiserver is reached by. kubernetes.default.svc* matter for clients that
# think they run in-cluster; the loopback IP and localhost are how everything here
# actually connects.
APISERVER_SANS = (
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:127.0.0.1",
)


class PKIError(RuntimeError):
    """openssl failed; the message carries its output."""


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's file stem and subject (CN = user, O = groups)."""

    stem: str
    common_name: str
    organization: str | None = None


# RBAC: system:masters is the superuser group; the controller manager and the
# scheduler get exactly the bootstrap roles bound to their well-known user names.
ADMIN = ClientIdentity("admin", "kubernetes-admin", "system:masters")
CONTROLLER_MANAGER = ClientIdentity("kube-controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("kube-scheduler", "system:kube-scheduler")
# kwok writes node and pod status for every simulated node; a single superuser
# identity is simpler than reproducing the kubelet's node authorizer rules per node.
KWOK = ClientIdentity("kwok", "kwok-controller", "system:masters")
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK)


class _File:
    """One file of the PKI, by its name in the PKI's directory (read as ``pki.<attribute>``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, pki: PKI | None, owner: type[PKI]) -> Path:
        assert pki is not None, "a file of a PKI instance"
        return pki.dir / self.name


@dataclass(frozen=True)
class PKI:
    """File locations of the generated PKI."""

    dir: Path

    ca_cert = _File("ca.crt")
    ca_key = _File("ca.key")
    front_proxy_ca_cert = _File("front-proxy-ca.crt")
    front_proxy_ca_key = _File("front-proxy-ca.key")
    apiserver_cert = _File("apiserver.crt")
    apiserver_key = _File("apiserver.key")
    sa_key = _File("sa.key")
    sa_pub = _File("sa.pub")

    def client_cert(self, identity: ClientIdentity) -> Path:
        return self.dir / f"{identity.stem}.crt"

    def client_key(self, identity: ClientIdentity) -> Path:
        return self.dir / f"{identity.stem}.key"

    def _all_files(self) -> list[Path]:
        files = [self.dir / f.name for f in vars(PKI).values() if isinstance(f, _File)]
        for ident in CLIENTS:
            files += [self.client_cert(ident), self.client_key(ident)]
        return files

    def exists(self) -> bool:
        return all(f.is_file() for f in self._all_files())


def ensure_pki(directory: Path) -> PKI:
    """Create the PKI in ``directory`` unless a complete one is already there."""
    pki = PKI(directory)
    if pki.exists():
        return pki
    if shutil.which("openssl") is None:
        raise PKIError(
            "the `openssl` command is not on PATH; it is needed to create the cluster PKI"
        )
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    log.info("generating cluster PKI in %s", directory)
    _make_ca(pki.dir, "ca", "inferops-localcluster-ca")
    _make_ca(pki.dir, "front-proxy-ca", "inferops-localcluster-front-proxy-ca")
    _make_leaf(
        pki,
        stem="apiserver",
        subject_cn="kube-apiserver",
        organization=None,
        ext_usage="serverAuth",
        sans=APISERVER_SANS,
    )
    for ident in CLIENTS:
        _make_leaf(
            pki,
            stem=ident.stem,
            subject_cn=ident.common_name,
            organization=ident.organization,
            ext_usage="clientAuth",
            sans=(),
        )
    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(pki.sa_key)
    )
    _openssl("pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub))
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    # Config and CSR-less intermediates are not needed after signing.
    for cnf in directory.glob("*.cnf"):
        cnf.unlink()
    return pki


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PKIError(f"openssl {' '.join(args[:2])} failed:\n{proc.stdout}{proc.stderr}")


def _write_config(path: Path, cn: str, organization: str | None, extensions: list[str]) -> None:
    # A self-contained config, so the system openssl.cnf (whose default x509
    # extensions would mark every certificate as a CA) does not apply.
    lines = ["[req]", "distinguished_name = dn", "prompt = no", "", "[dn]"]
    if organization:
        lines.append(f"O = {organization}")
    lines += [f"CN = {cn}", "", "[ext]", *extensions]
    path.write_text("\n".join(lines) + "\n")


def _make_ca(directory: Path, stem: str, common_name: str) -> None:
    cnf = directory / f"{stem}.cnf"
    _write_config(
        cnf,
        common_name,
        None,
        [
            "basicConstraints = critical,CA:TRUE",
            "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
            "subjectKeyIdentifier = hash",
        ],
    )
    _new_certificate(directory, stem, CA_DAYS)


def _make_leaf(
    pki: PKI,
    *,
    stem: str,
    subject_cn: str,
    organization: str | None,
    ext_usage: str,
    sans: tuple[str, ...],
) -> None:
    cnf = pki.dir / f"{stem}.cnf"
    extensions = [
        "basicConstraints = critical,CA:FALSE",
        "keyUsage = critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage = {ext_usage}",
        "subjectKeyIdentifier = hash",
        "authorityKeyIdentifier = keyid",
    ]
    if sans:
        extensions.append(f"subjectAltName = {','.join(sans)}")
    _write_config(cnf, subject_cn, organization, extensions)
    # `req -x509 -CA` (OpenSSL 3) creates the key and the CA-signed certificate in
    # one call, without a CSR file or a serial-number file.
    _new_certificate(pki.dir, stem, LEAF_DAYS, "-CA", str(pki.ca_cert), "-CAkey", str(pki.ca_key))


def _new_certificate(directory: Path, stem: str, days: int, *signer: str) -> None:
    """A new EC key ``<stem>.key`` and its certificate ``<stem>.crt`` from ``<stem>.cnf``:
    self-signed, or signed by the CA that ``signer`` names (``-CA``, ``-CAkey``)."""
    _openssl(
        "req",
        "-x509",
        "-config",
        str(directory / f"{stem}.cnf"),
        "-extensions",
        "ext",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(directory / f"{stem}.key"),
        "-out",
        str(directory / f"{stem}.crt"),
        *signer,
        "-days",
        str(days),
    )
