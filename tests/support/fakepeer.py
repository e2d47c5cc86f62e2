"""A stand-in for the chaincode side of a Fabric peer, for tests without a real peer.

It serves ``protos.ChaincodeSupport/Register`` (peer-as-server mode) and performs the
handshake a real peer does: the chaincode sends REGISTER with its package ID, the peer
answers REGISTERED and READY and keeps the stream open. With TLS on it behaves like the
peer's per-process chaincode CA: client certificates are required, must chain to that CA,
and (as the real peer's access-control mapper does) the certificate must be the one
issued for the chaincode ID that registers.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2

# The generated protobuf modules create their classes at import time, so mypy cannot see them.
ChaincodeMessage: Any = chaincode_shim_pb2.ChaincodeMessage  # type: ignore[attr-defined]
ChaincodeID: Any = chaincode_pb2.ChaincodeID  # type: ignore[attr-defined]

_SERVICE = "protos.ChaincodeSupport"
_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Registration:
    chaincode_id: str
    client_cert_sha256: str  # hex SHA-256 of the client certificate's DER; "" without TLS


def cert_sha256(cert_pem: str | bytes) -> str:
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    return x509.load_pem_x509_certificate(data).fingerprint(hashes.SHA256()).hex()


def _cert_builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    # Fabric's chaincode certificates are valid from 24 h ago to 24 h ahead.
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=24))
        .not_valid_after(now + datetime.timedelta(hours=24))
    )


class CertificateAuthority:
    """An ECDSA P-256 CA like the one Fabric's tlsgen makes at every peer start."""

    def __init__(self, name: str) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            _cert_builder(subject, subject, self._key.public_key())
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
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name: str, *, server_ip: str | None = None) -> tuple[str, str]:
        """A leaf cert and its PKCS#8 key, both PEM; a server cert when server_ip is given."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_ip else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _cert_builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
                self.cert.subject,
                key.public_key(),
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server_ip:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(server_ip))]),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def fabric_key_pem(pkcs8_pem: str) -> str:
    """Relabel a PKCS#8 key the way the real peer writes client_key (PKCS#8 under an EC header)."""
    return pkcs8_pem.replace("BEGIN PRIVATE KEY", "BEGIN EC PRIVATE KEY").replace(
        "END PRIVATE KEY", "END EC PRIVATE KEY"
    )


class FakePeer:
    def __init__(
        self, tls: bool, mspid: str = "Org1MSP", max_streams: int = 16, host: str = _HOST
    ) -> None:
        """`host`: the address to listen on, where chaincode pods reach the host."""
        self._host = host
        self._tls = tls
        self._max_streams = max_streams
        self._mspid = mspid
        self._ca = CertificateAuthority("k8scc fake peer chaincode CA")
        self._server: Any = None
        self._port = 0
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._registrations: list[Registration] = []
        # client cert hash -> the chaincode ID it was issued for
        self._bindings: dict[str, str] = {}

    @property
    def address(self) -> str:
        if not self._port:
            raise RuntimeError("FakePeer is not started")
        return f"{self._host}:{self._port}"

    def start(self) -> None:
        handler = grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "Register": grpc.stream_stream_rpc_method_handler(
                    self._register,
                    request_deserializer=ChaincodeMessage.FromString,
                    response_serializer=ChaincodeMessage.SerializeToString,
                )
            },
        )
        # Every open Register stream holds a worker until the peer stops.
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_streams))
        server.add_generic_rpc_handlers((handler,))
        if self._tls:
            cert, key = self._ca.issue(self._host, server_ip=self._host)
            credentials = grpc.ssl_server_credentials(
                [(key.encode(), cert.encode())],
                root_certificates=self._ca.cert_pem.encode(),
                require_client_auth=True,
            )
            self._port = server.add_secure_port(f"{self._host}:0", credentials)
        else:
            self._port = server.add_insecure_port(f"{self._host}:0")
        server.start()
        self._server = server

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def __enter__(self) -> FakePeer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def chaincode_json(self, chaincode_id: str) -> dict[str, str]:
        """What the peer writes to chaincode.json for one launch of chaincode_id."""
        client_cert = client_key = root_cert = ""
        if self._tls:
            client_cert, pkcs8_key = self._ca.issue("k8scc fake peer chaincode client")
            client_key = fabric_key_pem(pkcs8_key)
            root_cert = self._ca.cert_pem
            with self._changed:
                self._bindings[cert_sha256(client_cert)] = chaincode_id
        return {
            "chaincode_id": chaincode_id,
            "peer_address": self.address,
            "client_cert": client_cert,
            "client_key": client_key,
            "root_cert": root_cert,
            "mspid": self._mspid,
        }

    def wait_registered(self, chaincode_id: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: any(r.chaincode_id == chaincode_id for r in self._registrations), timeout
            )

    def registered(self) -> list[str]:
        return [r.chaincode_id for r in self.registrations()]

    def registrations(self) -> list[Registration]:
        with self._changed:
            return list(self._registrations)

    def _register(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
        # An empty message stands for a stream closed before its first message.
        first = next(requests, ChaincodeMessage())
        if first.type != ChaincodeMessage.REGISTER:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "expected REGISTER")
        name = ChaincodeID.FromString(first.payload).name
        identity = ""
        if self._tls:
            # gRPC has already verified the chain; what is left is the peer's name binding.
            identity = cert_sha256(context.auth_context()["x509_pem_cert"][0])
            with self._changed:
                bound = self._bindings.get(identity)
            if bound != name:
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"TLS client certificate was not issued for chaincode {name}",
                )
        with self._changed:
            self._registrations.append(Registration(name, identity))
            self._changed.notify_all()
        yield ChaincodeMessage(type=ChaincodeMessage.REGISTERED)
        yield ChaincodeMessage(type=ChaincodeMessage.READY)
        while context.is_active() and not self._stopping.wait(0.2):
            pass
