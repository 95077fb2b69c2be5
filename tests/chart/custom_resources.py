"""Strict schemas for the custom resources Ferry ships, which kubernetes-validate cannot check.

Why it exists: kubernetes-validate knows only built-in kinds. ServiceMonitor and
PrometheusRule (Prometheus Operator, monitoring.coreos.com/v1) and Certificate
and Issuer (cert-manager.io/v1) would otherwise go unchecked, and a typo such
as `scrapeTimout` would only fail in a user's cluster. These schemas are
written from those projects' published API references and cover the fields
Ferry's objects use (plus their close neighbours); unknown fields are errors,
as with `kubectl apply`'s strict field validation.
"""

from __future__ import annotations

from typing import Any

import jsonschema

Schema = dict[str, Any]


def _obj(properties: Schema, required: tuple[str, ...] = ()) -> Schema:
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": list(required)}


_STR = {"type": "string"}
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_GO_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = _obj(
    {
        "matchLabels": _STR_MAP,
        "matchExpressions": {
            "type": "array",
            "items": _obj(
                {"key": _STR, "operator": _STR, "values": {"type": "array", "items": _STR}}, ("key", "operator")
            ),
        },
    }
)
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": _STR, "namespace": _STR, "labels": _STR_MAP, "annotations": _STR_MAP},
}


def _resource(api_version: str, kind: str, spec: Schema) -> Schema:
    return _obj(
        {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": _METADATA, "spec": spec},
        ("apiVersion", "kind", "metadata", "spec"),
    )


_ENDPOINT = _obj(
    {
        "port": _STR,
        "targetPort": {"type": ["string", "integer"]},
        "scheme": {"enum": ["http", "https"]},
        "path": _STR,
        "interval": _DURATION,
        "scrapeTimeout": _DURATION,
        "honorLabels": {"type": "boolean"},
        "metricRelabelings": {"type": "array"},
        "relabelings": {"type": "array"},
    }
)
_RULE = {
    "oneOf": [
        _obj(
            {"alert": _STR, "expr": _STR, "for": _DURATION, "keep_firing_for": _DURATION, "labels": _STR_MAP,
             "annotations": _STR_MAP},
            ("alert", "expr"),
        ),
        _obj({"record": _STR, "expr": _STR, "labels": _STR_MAP}, ("record", "expr")),
    ]
}  # fmt: skip
_ISSUER_REF = _obj({"name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": _STR}, ("name",))

SCHEMAS: dict[tuple[str, str], Schema] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _resource(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        _obj(
            {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": _obj({"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STR}}),
                "endpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
                "jobLabel": _STR,
            },
            ("selector", "endpoints"),
        ),
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _resource(
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        _obj(
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": _obj(
                        {
                            "name": _STR,
                            "interval": _DURATION,
                            "rules": {"type": "array", "minItems": 1, "items": _RULE},
                        },
                        ("name", "rules"),
                    ),
                }
            },
            ("groups",),
        ),
    ),
    ("cert-manager.io/v1", "Issuer"): _resource(
        "cert-manager.io/v1", "Issuer", _obj({"selfSigned": _obj({"crlDistributionPoints": {"type": "array"}})})
    ),
    ("cert-manager.io/v1", "Certificate"): _resource(
        "cert-manager.io/v1",
        "Certificate",
        _obj(
            {
                "secretName": _STR,
                "dnsNames": {"type": "array", "minItems": 1, "items": _STR},
                "commonName": _STR,
                "duration": _GO_DURATION,
                "renewBefore": _GO_DURATION,
                "privateKey": _obj(
                    {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                        "encoding": {"enum": ["PKCS1", "PKCS8"]},
                    }
                ),
                "issuerRef": _ISSUER_REF,
                "usages": {"type": "array", "items": _STR},
            },
            ("secretName", "issuerRef"),
        ),
    ),
}


def custom_resource_errors(obj: dict[str, Any]) -> list[str] | None:
    """Problems with a custom resource Ferry ships; None if the kind is not one of them."""
    schema = SCHEMAS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if schema is None:
        return None
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]
