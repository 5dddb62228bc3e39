"""The REST side of the Predict scenario: TF Serving's JSON API through Locust's FastHttpUser.

Import only after `locust`. The body is encoded once (row or columnar format) and posted
as bytes; FastHttpSession fires Locust's request events itself.
"""

from __future__ import annotations

import itertools
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from locust import FastHttpUser
from locust.contrib.fasthttp import FastHttpSession

from scenarios.loadgen import Backend, PredictUser, Prepared, ScenarioError, model_options
from scenarios.mixes import RequestKind
from scenarios.options import ScenarioOptions, Target, arm_options, rest_target
from scenarios.payloads import Payload, rest_body
from scenarios.recording import Key
from scenarios.signatures import Signature, SignatureError, from_rest_metadata

METADATA_TIMEOUT_S = 30.0


def model_path(options: ScenarioOptions) -> str:
    """`/v1/models/NAME[/versions/N | /labels/L]`."""
    path = f"/v1/models/{options.model_name}"
    if options.model_version is not None:
        path += f"/versions/{options.model_version}"
    elif options.version_label:
        path += f"/labels/{options.version_label}"
    return path


def headers(options: ScenarioOptions) -> dict[str, str]:
    result = {"Content-Type": "application/json"}
    if options.token:
        result["Authorization"] = f"Bearer {options.token}"
    return result


def _ssl_context(options: ScenarioOptions) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=options.tls_ca) if options.tls_ca else None


class RestBackend(Backend):
    """REST targets, the metadata endpoint, and the JSON predict body."""

    protocol = "rest"
    request_type = "POST"
    request_name = "predict"

    def target(self, text: str, options: ScenarioOptions) -> Target:
        return rest_target(text)

    def signatures(self, target: Target, options: ScenarioOptions) -> dict[str, Signature]:
        url = f"{target.address}{model_path(options)}/metadata"
        request = urllib.request.Request(url, headers=headers(options))
        try:
            with urllib.request.urlopen(
                request, timeout=METADATA_TIMEOUT_S, context=_ssl_context(options)
            ) as answer:
                metadata = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise ScenarioError(f"GET {url} failed: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ScenarioError(f"GET {url} failed: {exc}") from None
        try:
            return from_rest_metadata(metadata)
        except SignatureError as exc:
            raise ScenarioError(f"GET {url}: {exc}") from None

    def encode(self, signature: Signature, payload: Payload, options: ScenarioOptions) -> bytes:
        return rest_body(payload.inputs, signature.name, columnar=options.rest_format == "columnar")


BACKEND = RestBackend()


class RestPredictUser(PredictUser, FastHttpUser):
    """Posts the prepared body to each target's :predict (see PredictUser for load models)."""

    abstract = False

    def on_start(self) -> None:
        prepared = self.bench.prepared
        if prepared is None:
            raise ScenarioError("the request was not prepared (see the log for why)")
        self.paths = {
            (kind.model, kind.arm): model_path(
                arm_options(model_options(prepared.options, kind.model), kind.arm)
            )
            + ":predict"
            for kind in prepared.requests
        }
        self.headers = headers(prepared.options)
        self.bodies = prepared.requests
        self.sessions = itertools.cycle([self._session(t, prepared) for t in prepared.targets])

    def _session(self, target: Target, prepared: Prepared) -> FastHttpSession:
        options = prepared.options
        extra: dict[str, Any] = {}
        if options.tls_ca:
            extra["ssl_context_factory"] = lambda: _ssl_context(options)
        return FastHttpSession(
            target.address,
            request_event=self.environment.events.request,
            user=self,
            insecure=not options.tls_ca,
            network_timeout=options.request_timeout_s,
            connection_timeout=options.request_timeout_s,
            concurrency=options.max_outstanding if options.open_loop else 1,
            max_retries=0,
            **extra,
        )

    def send(self, key: Key, kind: RequestKind) -> tuple[str | None, int | None]:
        """TF Serving's REST answers do not name the version: by version, REST requests
        count under their version-split arm."""
        session = next(self.sessions)
        response = session.post(
            # Locust's stub says str | dict, but the session sends bytes as they are.
            self.paths[(kind.model, kind.arm)],
            data=self.bodies[kind],  # type: ignore[arg-type]  # bytes go through as they are
            headers=self.headers,
            name=self.bench.request_name(key),
        )
        if response.status_code == 200:
            return None, None
        if response.status_code:
            return f"HTTP_{response.status_code}", None
        return type(getattr(response, "error", None)).__name__, None
