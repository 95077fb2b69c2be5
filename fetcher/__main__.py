"""Command line of the fetcher: ``python -m fetcher init|sidecar|once|status|role``.

The entry point of both injected containers and of the migration check, so it owns what library code must
not: the environment, exit codes, signals and the termination message. Details: docs/fetcher.md ("The commands").
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from fetcher import add_version_option, command_name
from fetcher.contract import (
    DEFAULT_MOUNT_PATH,
    SPEC_ENV_VAR,
    FetchSpec,
    ManifestError,
    SpecError,
    load_manifests,
    needs_kube_api,
    pick_secret_provider_class,
    spec_from_json,
    spec_from_secret_provider_class,
)
from fetcher.contract.secret_objects import SecretObjectsError
from fetcher.errors import ConfigError, FerryError
from fetcher.logs import LEVELS, LOG_LEVEL_ENV_VAR, log

TARGET_DIR_ENV_VAR = "FERRY_TARGET_DIR"
TERMINATION_LOG_ENV_VAR = "FERRY_TERMINATION_LOG"
# Where the ServiceAccount token and CA are, for running outside a pod (tests, a laptop); in a pod, the default.
SERVICE_ACCOUNT_DIR_ENV_VAR = "FERRY_SERVICE_ACCOUNT_DIR"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# The kubelet keeps at most 4096 bytes of a termination message.
MAX_TERMINATION_MESSAGE_BYTES = 4096

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, so no `except Exception` on the way up swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _SignalHandlers:
    """While installed: the first SIGINT/SIGTERM sets `stop` and raises Interrupted in the main thread."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _SignalHandlers:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._interrupt)
        return self

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _interrupt(self, signum: int, _frame: FrameType | None) -> None:
        # No logging here: the interrupted code may hold the log's lock. A second signal only repeats the first.
        if self.stop.is_set():
            return
        self.stop.set()
        raise Interrupted(signum)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    args = _parser(env).parse_args(argv)
    level = env.get(LOG_LEVEL_ENV_VAR, "info").lower()
    log.set_level(level if level in LEVELS else "info")
    if args.command == "status":  # a probe: never touches the termination message
        return run_status(args.dir, args.unhealthy_after)
    termination_log = args.termination_log or env.get(TERMINATION_LOG_ENV_VAR) or DEFAULT_TERMINATION_LOG
    explicit_log = bool(args.termination_log or env.get(TERMINATION_LOG_ENV_VAR))
    try:
        with _SignalHandlers() as handlers:
            if args.command == "init":
                return run_init(env, args.dir)
            if args.command == "sidecar":
                return run_sidecar_command(env, args.dir, handlers.stop)
            if args.command == "role":
                return run_role(args.secret_provider_class, args.service_account, args.namespace)
            return run_once(env, args.secret_provider_class, args.dir, args.region)
    except (Interrupted, KeyboardInterrupt) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        if args.command == "sidecar" and signum == signal.SIGTERM:
            log.info("sidecar stopped", signal=signal.Signals(signum).name)
            return EXIT_OK
        log.info(f"{args.command} interrupted", signal=signal.Signals(signum).name)
        return EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED
    except (SpecError, ConfigError, SecretObjectsError) as exc:
        return _fail(args.command, str(exc), EXIT_BAD_CONFIG, termination_log, explicit_log)
    except FerryError as exc:
        return _fail(args.command, str(exc), EXIT_FAILED, termination_log, explicit_log)
    except Exception as exc:  # a bug: report where, never the message (it could quote a value)
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
        message = f"internal error {type(exc).__name__}{where}; please report it as a Ferry bug"
        return _fail(args.command, message, EXIT_FAILED, termination_log, explicit_log)


def run_init(env: Mapping[str, str], target_dir: str) -> int:
    spec = load_spec(env)  # before importing the AWS client: a bad spec fails fast

    on_files = secret_sync_hook(spec, env)  # before AWS too: a pod that cannot sync fails fast

    from fetcher.loop import deliver
    from fetcher.providers import clients_from_env
    from fetcher.startup import deadline_from_env, within_deadline

    deadline = deadline_from_env(env)
    clients = clients_from_env(spec, env)
    delivery = within_deadline(lambda: deliver(spec, clients, target_dir, on_files), deadline)
    log.info(
        "files written" if delivery.swapped else "files already current",
        dir=target_dir,
        files=len(delivery.files),
        api_calls=sum(clients.calls.by_operation().values()),
    )
    return EXIT_OK


def run_sidecar_command(env: Mapping[str, str], target_dir: str, stop: threading.Event) -> int:
    spec = load_spec(env)

    from fetcher.loop import RefreshState, run_sidecar
    from fetcher.providers import clients_from_env
    from fetcher.secret_sync import resync_seconds_from_env

    if spec.refresh_seconds <= 0:
        raise ConfigError(
            f"the spec in {SPEC_ENV_VAR} has no refresh interval, so the sidecar has nothing to do; "
            "set ferry.dev/refresh-interval or do not run the sidecar"
        )
    state = RefreshState(
        spec=spec,
        clients=clients_from_env(spec, env),
        target_dir=Path(target_dir),
        on_files=secret_sync_hook(spec, env),
        resync_seconds=resync_seconds_from_env(env) if needs_kube_api(spec) else 0.0,
    )
    return run_sidecar(state, stop)


def run_status(target_dir: str, unhealthy_after: float) -> int:
    """The liveness probe: one line on stdout (the kubelet puts it in the probe's event), exit 0 or 1."""
    from fetcher.status import check

    healthy, line = check(target_dir, unhealthy_after)
    print(line, flush=True)
    return EXIT_OK if healthy else EXIT_FAILED


def run_once(env: Mapping[str, str], manifest_path: str, target_dir: str, region: str | None) -> int:
    from fetcher.aws import AwsClients
    from fetcher.loop import deliver
    from fetcher.providers import pinned_endpoints, refuse_outside_a_pod

    manifest = refuse_outside_a_pod(load_secret_provider_class(manifest_path), manifest_path)
    kind = manifest.get("kind")
    if kind != "SecretProviderClass":
        # Before the region: a workload passed by mistake is the first thing to fix, not the last.
        named = f"a {str(kind)[:63]}" if isinstance(kind, str) and kind else "no kind"
        raise ConfigError(
            f"{manifest_path} holds {named}, not a SecretProviderClass: pass the class's own file "
            "(kind: SecretProviderClass); to preview a workload, use `python -m webhook inject -f`"
        )
    region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    parameters = manifest.get("spec", {}).get("parameters") if isinstance(manifest.get("spec"), Mapping) else None
    if not region and not (isinstance(parameters, Mapping) and parameters.get("region")):
        raise ConfigError(
            f"no AWS region: {manifest_path} sets no spec.parameters.region; "
            "pass --region (e.g. --region us-east-1) or set AWS_REGION"
        )
    spec = spec_from_secret_provider_class(manifest, region=region)
    from fetcher.awswire import NoCredentialsError
    from fetcher.laptop import profile_credentials  # a person's ~/.aws profile, when botocore is installed

    clients = AwsClients.from_env(env, profile_credentials(env), pinned_endpoints(spec))
    try:
        clients.credentials.get(spec.region)  # cached: the fetch below reuses it
    except NoCredentialsError:
        # Said once, before any object, and for a laptop: `once` runs with the user's identity, not a pod's.
        raise ConfigError(LAPTOP_CREDENTIALS_HINT) from None
    except Exception:  # noqa: BLE001 - any other identity failure is reported by the fetch, with its code
        pass
    delivery = deliver(spec, clients, target_dir)
    log.info(
        "files written" if delivery.swapped else "files already current",
        dir=target_dir,
        files=sorted(delivery.files),
        region=spec.region,
    )
    return EXIT_OK


LAPTOP_CREDENTIALS_HINT = (
    "no AWS credentials found: `once` fetches with your own AWS identity. Log in first (`aws sso login "
    "--profile NAME`, then AWS_PROFILE=NAME), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; that identity "
    "must be allowed to read the class's objects (secretsmanager:GetSecretValue, ssm:GetParameters)"
)


def secret_sync_hook(spec: FetchSpec, env: Mapping[str, str]) -> Callable[[Mapping[str, Any]], None] | None:
    """The Kubernetes Secrets sync to run after each swap, or None when the spec has no secretObjects."""
    if not needs_kube_api(spec):
        return None
    from fetcher.kube import CA_PATH, TOKEN_PATH, KubeClient
    from fetcher.secret_sync import SecretObjectsError, SecretSyncError, file_syncer, pod_owner_from_env

    try:
        owner = pod_owner_from_env(env)
    except SecretObjectsError as exc:
        raise ConfigError(str(exc)) from None
    account_dir = env.get(SERVICE_ACCOUNT_DIR_ENV_VAR)
    token_file, ca_file = (f"{account_dir}/token", f"{account_dir}/ca.crt") if account_dir else (TOKEN_PATH, CA_PATH)
    client = KubeClient.in_cluster(env, token_file=token_file, ca_file=ca_file)
    sync = file_syncer(spec.secret_objects, client, owner)

    def hook(files: Mapping[str, Any]) -> None:
        try:
            names = sync(files)
        except SecretSyncError:
            raise
        except FerryError as exc:  # the API's answer: said to be about secretObjects, here and in the status entry
            raise SecretSyncError(f"secretObjects not synced (the files are written): {exc}") from exc
        log.info("kubernetes secrets synced", secrets=names, namespace=owner.namespace)

    return hook


def run_role(manifest_path: str, service_account: str, namespace: str | None) -> int:
    """Print the Role and RoleBinding that let `service_account` write the class's secretObjects."""
    from fetcher.secret_rbac import rbac_yaml_for_class

    manifest = load_secret_provider_class(manifest_path)
    try:
        sys.stdout.write(rbac_yaml_for_class(manifest, service_account, namespace))
    except SecretObjectsError as exc:
        raise ConfigError(f"{manifest_path}: {exc}") from None
    return EXIT_OK


def load_spec(env: Mapping[str, str]) -> FetchSpec:
    text = env.get(SPEC_ENV_VAR)
    if not text:
        raise ConfigError(f"{SPEC_ENV_VAR} is not set; the Ferry webhook puts the spec there when it injects the pod")
    return spec_from_json(text)


def load_secret_provider_class(path: str) -> Mapping[str, Any]:
    """The SecretProviderClass in a YAML file (the first one, if the file holds several documents)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {os.strerror(exc.errno or 0) or exc}") from None
    try:
        return pick_secret_provider_class(load_manifests(raw, path), path)
    except ManifestError as exc:
        raise ConfigError(str(exc)) from None


def _fail(command: str, message: str, code: int, termination_log: str, explicit: bool) -> int:
    log.error(f"{command} failed", error=message, exit_code=code)
    write_termination_message(termination_log, message, create=explicit)
    return code


def write_termination_message(path: str, message: str, *, create: bool) -> bool:
    """Write the message where the kubelet reads it. The default path is used only if it exists (in a pod)."""
    if not create and not os.path.exists(path):
        return False
    # backslashreplace: a path given in bytes that are not UTF-8 (surrogates) must not end the report in a crash.
    data = message.encode("utf-8", "backslashreplace")
    if len(data) > MAX_TERMINATION_MESSAGE_BYTES:
        data = data[: MAX_TERMINATION_MESSAGE_BYTES - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."
    try:
        with open(path, "wb") as handle:
            handle.write(data)
    except OSError:
        return False
    return True


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command_name("fetcher"), description="Ferry's in-pod secrets fetcher.")
    add_version_option(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    default_dir = env.get(TARGET_DIR_ENV_VAR) or DEFAULT_MOUNT_PATH

    def common(sub: argparse.ArgumentParser, dir_required: bool = False) -> None:
        sub.add_argument(
            "--dir",
            required=dir_required,
            default=None if dir_required else default_dir,
            help="directory to write into"
            + ("" if dir_required else f" (default ${TARGET_DIR_ENV_VAR} or {DEFAULT_MOUNT_PATH})"),
        )
        sub.add_argument(
            "--termination-log",
            default=None,
            help=f"failure message file (default ${TERMINATION_LOG_ENV_VAR} or {DEFAULT_TERMINATION_LOG})",
        )

    common(commands.add_parser("init", help=f"fetch the spec in ${SPEC_ENV_VAR} once and write the files"))
    common(commands.add_parser("sidecar", help="write the files, then keep them fresh until SIGTERM"))
    status = commands.add_parser("status", help="the sidecar's liveness probe: exit 1 when refreshes keep failing")
    status.add_argument(
        "--dir",
        default=default_dir,
        help=f"the sidecar's directory (default ${TARGET_DIR_ENV_VAR} or {DEFAULT_MOUNT_PATH})",
    )
    status.add_argument(
        "--unhealthy-after",
        type=_seconds,
        required=True,
        metavar="SECONDS",
        help="how long refreshes may fail without a break before the probe fails (0: never)",
    )
    once = commands.add_parser("once", help="fetch from a SecretProviderClass manifest file (migration checks)")
    common(once, dir_required=True)
    once.add_argument("--secret-provider-class", required=True, metavar="FILE", help="SecretProviderClass YAML")
    once.add_argument(
        "--region", default=None, help="region when the SPC names none (else $AWS_REGION or $AWS_DEFAULT_REGION)"
    )
    role = commands.add_parser(
        "role", help="print the Role and RoleBinding a pod's ServiceAccount needs for an SPC's secretObjects"
    )
    role.add_argument("--secret-provider-class", required=True, metavar="FILE", help="SecretProviderClass YAML")
    role.add_argument("--service-account", required=True, metavar="NAME", help="the pods' ServiceAccount")
    role.add_argument("--namespace", default=None, help="the pods' namespace (default: the class's)")
    role.add_argument("--termination-log", default=None, help=argparse.SUPPRESS)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds (0 or more)")
    return value


def _exit(code: int) -> None:
    """Exit with `code`, without waiting for worker threads an interrupt left hanging on the network."""
    sys.stdout.flush()
    sys.stderr.flush()
    if threading.active_count() > 1:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
