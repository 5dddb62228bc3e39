"""Who may call the server and how much one call may ask: TLS, a bearer token, request limits.

- TLS follows TF Serving's ``BuildServerCredentialsFromSSLConfigFile`` (server.cc): the SSLConfig's
  key and certificate serve gRPC; ``client_verify`` turns on
  GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY (else clients are not asked for a
  certificate) and ``custom_ca`` holds the roots client certificates are checked against. TF
  Serving's REST server has no TLS; ours serves REST on the same certificates, with the same
  client verification.
- The bearer token (``--auth_token_file``, our extension) is checked before a request is parsed:
  a refused call never reaches the model, the batch queue or the request metrics.
- The limits (``--max_request_bytes``, ``--max_request_rows``, our extensions) bound what one
  request may make the server hold: gRPC refuses an over-size message itself, before receiving
  it, with RESOURCE_EXHAUSTED (as TF Serving does given ``grpc.max_receive_message_length``);
  REST refuses it from its Content-Length, or while reading, with INVALID_ARGUMENT / 400.
  The bytes a request's tensors may take once decoded follow from ``--max_request_bytes``
  (``tensor_codec.tensor_budget``), so a small message cannot declare a huge tensor.

The pure parts (token check, row counting, limit messages) are unit-tested; the TLS and
transport hooks are exercised against a real server.
"""

from __future__ import annotations

import hmac
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from aiohttp import web
from tensorflow_serving.apis import input_pb2

from reference_server import json_tensor
from reference_server.config_files import ConfigError, SslConfig, load_ssl_config
from reference_server.errors import ServingError, invalid_argument
from reference_server.tensor_codec import tensor_budget

AUTHORIZATION = "authorization"
BEARER = "bearer"
# RFC 6750 §3: a 401 names the scheme the client should use.
WWW_AUTHENTICATE = 'Bearer realm="reference-server"'
MISSING_TOKEN = (
    "Missing bearer token: this server requires the header 'authorization: Bearer <token>'"
)
WRONG_TOKEN = "Invalid bearer token"


# -- bearer token (pure) --------------------------------------------------------------------------


def load_token(path: str | Path, flag: str = "auth_token_file") -> str:
    """The token in ``path``: the file's content without surrounding whitespace."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(flag, path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(flag, path, f"cannot read file: {exc.strerror or exc}") from exc
    if not token:
        raise ConfigError(flag, path, "the file is empty; it must hold the bearer token")
    if any(c.isspace() for c in token):
        raise ConfigError(flag, path, "the token must be one word (no whitespace inside)")
    return token


class BearerAuth:
    """Checks ``authorization: Bearer <token>`` values against one token, in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def refusal(self, header: str | None) -> ServingError | None:
        """None when ``header`` carries the token, else the UNAUTHENTICATED error to answer."""
        if not header:
            return ServingError(grpc.StatusCode.UNAUTHENTICATED, MISSING_TOKEN)
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != BEARER or not credentials.strip():
            return ServingError(grpc.StatusCode.UNAUTHENTICATED, MISSING_TOKEN)
        # compare_digest on bytes: no early exit, so the time does not tell how much matched.
        if not hmac.compare_digest(credentials.strip().encode(), self._token):
            return ServingError(grpc.StatusCode.UNAUTHENTICATED, WRONG_TOKEN)
        return None


# -- request limits (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestLimits:
    """Most bytes and rows one request may carry; 0 means no limit (as does a negative
    flag value, like TF Serving's timeouts: ``from_flags`` turns it into 0)."""

    max_bytes: int = 0
    max_rows: int = 0

    @property
    def max_tensor_bytes(self) -> int:
        """The most one request's decoded tensors may take (derived from ``max_bytes``)."""
        return tensor_budget(self.max_bytes)

    def check_body_size(self, size: int | None) -> None:
        """INVALID_ARGUMENT when a body of ``size`` bytes (None: not known yet) is too large."""
        if self.max_bytes > 0 and size is not None and size > self.max_bytes:
            raise invalid_argument(
                f"Request body of {size} bytes is larger than this server's limit of "
                f"{self.max_bytes} bytes (--max_request_bytes)"
            )

    def body_too_large(self) -> ServingError:
        """The error for a body found too large while reading it (no Content-Length)."""
        return invalid_argument(
            f"Request body is larger than this server's limit of {self.max_bytes} bytes "
            "(--max_request_bytes)"
        )

    def check_rows(self, rows: int) -> None:
        """INVALID_ARGUMENT when a request of ``rows`` rows (batch entries) is too large."""
        if self.max_rows > 0 and rows > self.max_rows:
            raise invalid_argument(
                f"Request has {rows} rows, more than this server's limit of {self.max_rows} "
                "rows per request (--max_request_rows)"
            )

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        if self.max_rows > 0:  # the common case, no limit, costs one comparison per request
            self.check_rows(input_rows(inputs))

    def check_examples(self, request_input: input_pb2.Input) -> None:
        if self.max_rows > 0:
            self.check_rows(example_count(request_input))


def input_rows(inputs: Mapping[str, np.ndarray]) -> int:
    """A Predict request's rows: the largest first dimension among its inputs (a scalar: 1)."""
    return max((int(a.shape[0]) if a.ndim else 1 for a in inputs.values()), default=0)


def example_count(request_input: input_pb2.Input) -> int:
    """The tf.Examples a Classify/Regress/MultiInference input carries."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return len(request_input.example_list.examples)
    if kind == "example_list_with_context":
        return len(request_input.example_list_with_context.examples)
    return 0


# -- TLS -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsSetup:
    """A checked SSLConfig: gRPC server credentials and a REST ``ssl.SSLContext`` from it."""

    config: SslConfig

    @property
    def client_verify(self) -> bool:
        return self.config.client_verify

    def grpc_credentials(self) -> grpc.ServerCredentials:
        config = self.config
        return grpc.ssl_server_credentials(
            [(config.server_key.encode(), config.server_cert.encode())],
            root_certificates=config.custom_ca.encode() if config.custom_ca else None,
            require_client_auth=config.client_verify,
        )

    def rest_context(self) -> ssl.SSLContext:
        """A server context with the same certificate, roots and client verification."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_key_pair(context, self.config.server_key, self.config.server_cert)
        if self.config.custom_ca:
            context.load_verify_locations(cadata=self.config.custom_ca)
        context.verify_mode = ssl.CERT_REQUIRED if self.config.client_verify else ssl.CERT_NONE
        return context


def _load_key_pair(context: ssl.SSLContext, key_pem: str, cert_pem: str) -> None:
    """``load_cert_chain`` reads only files: pass the PEM texts through a private temporary
    folder (mode 0700) that is removed at once."""
    with tempfile.TemporaryDirectory(prefix="reference-server-tls-") as folder:
        key_file, cert_file = Path(folder, "key.pem"), Path(folder, "cert.pem")
        key_file.touch(mode=0o600)
        key_file.write_text(key_pem, encoding="utf-8")
        cert_file.write_text(cert_pem, encoding="utf-8")
        context.load_cert_chain(cert_file, key_file)


def load_tls(path: str | Path, flag: str = "ssl_config_file") -> TlsSetup:
    """The SSLConfig in ``path``, checked so that a bad one fails at start-up. Raises ConfigError.

    Python's gRPC requires roots when it must verify clients (TF Serving's C++ would fall back
    to the system roots), so ``client_verify`` without ``custom_ca`` is refused here.
    """
    config = load_ssl_config(path, flag)
    for field in ("server_key", "server_cert"):
        if not getattr(config, field).strip():
            raise ConfigError(flag, path, f"{field} is empty; it must hold the PEM text")
    if config.client_verify and not config.custom_ca.strip():
        raise ConfigError(
            flag, path, "client_verify: true needs custom_ca (the PEM roots of client certificates)"
        )
    setup = TlsSetup(config)
    try:
        setup.rest_context()
    except ssl.SSLError as exc:
        raise ConfigError(flag, path, f"unusable key, certificate or custom_ca: {exc}") from exc
    return setup


# -- the transports' hooks ------------------------------------------------------------------------


class GrpcAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without the bearer token before their request is received or parsed."""

    def __init__(self, auth: BearerAuth) -> None:
        self._auth = auth

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        metadata = dict(handler_call_details.invocation_metadata or ())
        refusal = self._auth.refusal(metadata.get(AUTHORIZATION))
        if refusal is None:
            return handler
        return _refusing_handler(refusal)


def _refusing_handler(refusal: ServingError) -> grpc.RpcMethodHandler:
    """A handler that aborts at once. Declared client-streaming, so gRPC calls it without
    waiting for the request message (a unary call looks the same on the wire): a refused
    client cannot make the server buffer its payload."""

    async def refuse(request_iterator, context: grpc.aio.ServicerContext):
        await context.abort(refusal.code, refusal.message)

    return grpc.stream_unary_rpc_method_handler(refuse)


RestHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def rest_auth_middleware(auth: BearerAuth, open_paths: Collection[str] = ()):
    """aiohttp middleware: every path but ``open_paths`` needs the token; a refusal is 401 with
    TF Serving's ``{"error": ...}`` body, sent before the body is read."""

    @web.middleware
    async def check_token(request: web.Request, handler: RestHandler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        refusal = auth.refusal(request.headers.get(AUTHORIZATION))
        if refusal is None:
            return await handler(request)
        return web.Response(
            body=json_tensor.encode_error(refusal.message),
            status=refusal.http_status,
            content_type="application/json",
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )

    return check_token


@dataclass(frozen=True)
class ServerSecurity:
    """What the security flags ask for, loaded and checked once at start-up."""

    tls: TlsSetup | None = None
    auth: BearerAuth | None = None
    limits: RequestLimits = RequestLimits()

    @classmethod
    def from_flags(cls, flags) -> ServerSecurity:
        """From ServerFlags; raises ConfigError for an unusable file."""
        return cls(
            tls=load_tls(flags.ssl_config_file) if flags.ssl_config_file else None,
            auth=BearerAuth(load_token(flags.auth_token_file)) if flags.auth_token_file else None,
            limits=RequestLimits(max(flags.max_request_bytes, 0), max(flags.max_request_rows, 0)),
        )

    def add_grpc_port(self, server: grpc.aio.Server, address: str) -> int:
        """Listen on ``address``, over TLS when an SSLConfig was given; the bound port."""
        if self.tls is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.tls.grpc_credentials())

    def grpc_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [GrpcAuthInterceptor(self.auth)] if self.auth is not None else []

    def rest_middlewares(self, open_paths: Collection[str] = ()) -> list:
        return [rest_auth_middleware(self.auth, open_paths)] if self.auth is not None else []

    def rest_ssl_context(self) -> ssl.SSLContext | None:
        return self.tls.rest_context() if self.tls is not None else None
