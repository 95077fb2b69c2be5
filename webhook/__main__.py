"""Command line: `python -m webhook serve|inject|certs` (docs/admission.md, "The command line").

Exit codes: 0 success, 1 a manifest was denied, 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from fetcher import add_version_option, command_name
from fetcher.contract import load_manifests
from webhook.ownerevents import OwnerEvents, kubernetes_poster
from webhook.policy.request import NAMESPACE_OPT_IN_LABEL
from webhook.settings import Settings, SettingsError

log = logging.getLogger("ferry.webhook")

NATIVE_SIDECARS_MIN_VERSION = (1, 29)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(args, settings)
    if args.command == "inject":
        return _inject(args, settings)
    return _certs(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command_name("webhook"), description="Ferry's mutating admission webhook.")
    add_version_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_cluster_files(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--secret-provider-class",
            action="append",
            default=[],
            metavar="FILE",
            help="YAML file of SecretProviderClasses (repeatable); stands in for the cluster's",
        )
        sub.add_argument(
            "--namespace-annotations",
            metavar="FILE",
            help="YAML: {namespace: {annotation: value}} or Namespace manifests; stands in for the cluster's "
            "(namespace-wide opt-in needs a Namespace manifest with the label ferry.dev/inject=enabled)",
        )
        sub.add_argument(
            "--native-sidecars",
            choices=("auto", "true", "false"),
            help="override FERRY_NATIVE_SIDECARS (auto: detect Kubernetes >= 1.29; true without a cluster)",
        )

    serve = commands.add_parser("serve", help="serve /mutate over TLS")
    serve.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default: %(default)s, every IPv4 address)"
    )
    serve.add_argument("--port", type=int, default=8443, help="TLS port of /mutate (default: %(default)s)")
    serve.add_argument("--tls-cert-file", help="serving certificate (PEM); default FERRY_TLS_CERT_FILE or self-managed")
    serve.add_argument("--tls-key-file", help="private key (PEM) of --tls-cert-file")
    serve.add_argument("--write-ca", metavar="FILE", help="write the CA of a self-generated pair to FILE")
    serve.add_argument(
        "--noop-endpoint",
        action="store_true",
        help="also serve POST /noop (parse and allow; a benchmark baseline, off in production)",
    )
    add_cluster_files(serve)

    inject = commands.add_parser("inject", help="print mutated manifests, with no cluster")
    inject.add_argument("-f", "--filename", required=True, metavar="FILE", help="manifest file, or - for stdin")
    inject.add_argument(
        "--namespace", default="default", help="namespace of manifests that name none (default: %(default)s)"
    )
    add_cluster_files(inject)

    certs = commands.add_parser("certs", help="write a self-signed CA and serving certificate")
    certs.add_argument("--dns-name", action="append", default=[], help="DNS name (repeatable)")
    certs.add_argument("--ip", action="append", default=[], help="IP address (repeatable)")
    certs.add_argument(
        "--out-dir",
        default=".",
        metavar="DIR",
        help="where to write tls.crt, tls.key and ca.crt, created if missing (default: %(default)s, this directory)",
    )
    return parser


# --- inject --------------------------------------------------------------------

# The manifests `inject` reads at once: a whole kustomize build of a large app fits.
MAX_INJECT_BYTES = 16 * 1024 * 1024


def _inject(args: argparse.Namespace, settings: Settings) -> int:
    from webhook.policy.preview import HEADER, NOTES, as_preview
    from webhook.policy.view import secret_provider_classes_in
    from webhook.policy.workloads import InjectionDenied, inject_manifest

    try:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
        origin = "standard input" if args.filename == "-" else args.filename
        documents = load_manifests(text, origin, max_bytes=MAX_INJECT_BYTES)
        # SecretProviderClasses in the same stream as the workloads count, as `kubectl apply -f` would create them.
        view = _static_view(
            args.secret_provider_class, args.namespace_annotations, secret_provider_classes_in(documents)
        )
    except (OSError, ValueError) as exc:  # ManifestError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    native = (args.native_sidecars or settings.native_sidecars) != "false"
    output: list[Any] = []
    failed = previewed = False
    for document in documents:
        if document is None:
            continue
        items = document.get("items") if isinstance(document, dict) and document.get("kind") == "List" else None
        results = []
        for item in items if isinstance(items, list) else [document]:
            try:
                result = inject_manifest(
                    item,
                    namespace=args.namespace,
                    view=view,
                    settings=settings,
                    native_sidecars=native,
                )
            except InjectionDenied as exc:
                print(f"error: {exc.where}: {exc.message}", file=sys.stderr)
                failed = True
                continue
            if result.decision is not None:
                for warning in result.decision.warnings:
                    print(f"warning: {warning}", file=sys.stderr)
            results.append(as_preview(result.document, item))
            previewed = previewed or (result.decision is not None and result.decision.outcome == "injected")
        output.append({**document, "items": results} if isinstance(items, list) else results[0] if results else None)
    if failed:
        return 1
    for note in NOTES if previewed else ():
        print(note, file=sys.stderr)
    try:
        if previewed:
            sys.stdout.write(HEADER)
        _dump(output, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


class _NoAliasDumper(yaml.SafeDumper):
    """Kubernetes manifests never use anchors; write shared objects out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(documents: list[Any], stream: TextIO) -> None:
    yaml.dump_all(
        [doc for doc in documents if doc is not None], stream, Dumper=_NoAliasDumper, sort_keys=False, width=1000
    )


def _static_view(
    spc_files: Sequence[str], namespace_file: str | None, extra_classes: Sequence[Mapping[str, Any]] = ()
) -> Any:
    from webhook.policy.view import StaticView

    annotations, labels = _load_namespaces(namespace_file)
    return StaticView.from_files(list(spc_files), annotations, extra_classes, labels)


def _load_namespaces(path: str | None) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """({namespace: annotations}, {namespace: labels}) from a plain mapping or from Namespace manifests.

    A namespace-wide opt-in counts only as it does in a cluster: the API server sends a namespace's
    pods to Ferry only when the namespace carries the label ferry.dev/inject=enabled, so without it
    the namespace's ferry.dev/inject annotation is dropped here, with a warning. The plain mapping
    holds no labels: namespace-wide opt-in needs a Namespace manifest.
    """
    if not path:
        return {}, {}
    result: dict[str, dict[str, str]] = {}
    labels: dict[str, dict[str, str]] = {}
    for index, doc in enumerate(load_manifests(Path(path).read_bytes(), path), start=1):
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise ValueError(f"{path}: document {index} must be a mapping")
        if doc.get("kind") == "Namespace":
            meta = doc.get("metadata") or {}
            result[str(meta.get("name"))] = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
            labels[str(meta.get("name"))] = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
            continue
        for name, values in doc.items():
            if not isinstance(values, Mapping):
                raise ValueError(f"{path}: namespace {name!r} must map to annotations (a mapping of strings)")
            result[str(name)] = {str(k): str(v) for k, v in values.items()}
    key, value = NAMESPACE_OPT_IN_LABEL
    for name, values_of_ns in result.items():
        if key in values_of_ns and (labels.get(name) or {}).get(key) != value:
            del values_of_ns[key]
            print(
                f"warning: namespace {name}: annotation {key} ignored: without the label {key}={value} a "
                "cluster never sends its pods to Ferry (a Namespace manifest with that label previews the opt-in)",
                file=sys.stderr,
            )
    return result, labels


# --- serve ---------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from kubernetes.client.exceptions import ApiException

    from webhook.cluster import kube
    from webhook.edge import server
    from webhook.edge.app import create_app, metrics_app
    from webhook.edge.gate import parse_networks
    from webhook.tls import certs, certstore

    _configure_json_logging(settings.log_level)
    cert_file = args.tls_cert_file or settings.tls_cert_file
    key_file = args.tls_key_file or settings.tls_key_file
    if bool(cert_file) != bool(key_file):
        log.error("--tls-cert-file and --tls-key-file go together")
        return 2
    if settings.metrics_port and settings.metrics_port == args.port:
        log.error(
            "FERRY_METRICS_PORT=%d is the admission port: metrics need a port of their own (or 0 for none)",
            settings.metrics_port,
        )
        return 2
    static = bool(args.secret_provider_class or args.namespace_annotations)
    try:
        api_client = None if static else kube.load_api_client()
    except kube.KubeConfigError as exc:
        log.error("%s", exc)
        return 2
    native_choice = args.native_sidecars or settings.native_sidecars
    cache = None
    owner_events: OwnerEvents | None = None
    workdir = tempfile.TemporaryDirectory(prefix="ferry-webhook-")
    try:
        if api_client is None:
            cluster: Any = _static_view(args.secret_provider_class, args.namespace_annotations)
            native = native_choice != "false"
        else:
            cache = kube.WatchCache(api_client, service_accounts=settings.gcp_workload_pool is not None)
            cache.start()
            cluster = cache
            native = _detect_native(native_choice, api_client, kube)
            watched = cache
            owner_events = OwnerEvents(
                kubernetes_poster(api_client), known_namespace=lambda ns: watched.namespace(ns) is not None
            )
            owner_events.start()
        dns_names = certs.service_dns_names(settings.service_name, settings.namespace)
        if not cert_file:
            if api_client is None:
                bundle = certs.generate_bundle([*dns_names, "localhost"], ip_addresses=("127.0.0.1",))
            else:
                try:
                    bundle = certstore.ensure_cluster_bundle(
                        api_client, settings.namespace, settings.tls_secret_name, dns_names
                    )
                    certstore.patch_ca_bundle(api_client, settings.webhook_config_name, bundle.ca_pem)
                except certstore.CertStoreError as exc:
                    log.error("%s", exc)
                    return 1
                except ApiException as exc:
                    log.error(
                        "cannot set the caBundle of MutatingWebhookConfiguration %s: %s %s",
                        settings.webhook_config_name,
                        exc.status,
                        exc.reason,
                    )
                    return 1
            cert_path, key_path, ca_path = certs.write_bundle(bundle, Path(workdir.name))
            cert_file, key_file = str(cert_path), str(key_path)
            if args.write_ca:
                Path(args.write_ca).write_bytes(Path(ca_path).read_bytes())
        elif args.write_ca:
            log.warning("--write-ca ignored: the certificate comes from files")
        assert cert_file and key_file
        cert_paths = (Path(cert_file), Path(key_file))
        app = create_app(
            settings,
            cluster,
            native_sidecars=native,
            ready_check=lambda: all(path.is_file() for path in cert_paths),
            noop_endpoint=args.noop_endpoint,
            owner_events=owner_events,
        )
        app.state.metrics.track_serving_certificate(Path(cert_file))
        mode = "static" if api_client is None else "cluster"
        log.info(
            "start",
            extra={"fields": {"mode": mode, "nativeSidecars": native, "metricsPort": settings.metrics_port or None}},
        )
        # What exists now (modules, the app, the cluster view) lives as long as the process. Frozen, it is
        # never walked again by the collector, whose full collections would otherwise stall admissions.
        gc.freeze()
        server.serve(
            app,
            host=args.host,
            port=args.port,
            cert_file=Path(cert_file),
            key_file=Path(key_file),
            log_level=settings.log_level,
            log_config=None,  # configured above: one JSON line per admission on stderr
            metrics_app=metrics_app(app.state.metrics) if settings.metrics_port else None,
            metrics_port=settings.metrics_port,
            metrics_host=settings.metrics_host,
            metrics_allowed=parse_networks(settings.metrics_allowed_sources),
            api_server_addresses=parse_networks(settings.api_server_addresses),
        )
    finally:
        if owner_events is not None:
            owner_events.stop()
        if cache is not None:
            cache.stop()
        workdir.cleanup()
    return 0


def _configure_json_logging(level: str) -> None:
    """Every line on stderr in the one JSON shape, uvicorn's own (error and access) included."""
    from fetcher.contract.logline import JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Lines need no thread or process fields, so records need not look them up (the logging HOWTO's
    # "Optimization"): one fewer cost on every admission.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def _detect_native(choice: str, api_client: Any, kube: Any) -> bool:
    if choice != "auto":
        return choice == "true"
    try:
        version: tuple[int, int] = kube.server_version(api_client)
    except Exception as exc:  # fall back, but say so
        log.warning("cannot read the server version (%s); assuming no native sidecars", type(exc).__name__)
        return False
    return version >= NATIVE_SIDECARS_MIN_VERSION


# --- certs ---------------------------------------------------------------------


def _certs(args: argparse.Namespace) -> int:
    from webhook.tls import certs

    if not args.dns_name and not args.ip:
        print("error: give at least one --dns-name or --ip", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bundle = certs.generate_bundle(list(args.dns_name), ip_addresses=tuple(args.ip))
    for path in certs.write_bundle(bundle, out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
