"""Telling the app in the same pod that its files changed: an HTTP POST and/or a signal.

Many apps read their secrets once at start; after a rotation they need a nudge, which may fail without
harm since the files are already right. Details: docs/fetcher.md ("Refresh").
"""

from __future__ import annotations

import http.client
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

from fetcher.contract import Notify
from fetcher.logs import log

NOTIFY_TIMEOUT_SECONDS = 2.0


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx answer stays an answer (logged as refused); the request never goes where it points."""

    def redirect_request(self, *_: object, **__: object) -> None:
        return None


def notify_app(notify: Notify, *, proc_root: str = "/proc", timeout: float = NOTIFY_TIMEOUT_SECONDS) -> None:
    """Send whatever notifications the spec asks for; log, never raise, on failure."""
    if notify.url:
        post_reload(notify.url, timeout=timeout)
    if notify.signal and notify.process:
        try:
            signal_processes(notify.process, notify.signal, proc_root=proc_root)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("signal notification failed", process=notify.process, error=type(exc).__name__)


def post_reload(url: str, *, timeout: float = NOTIFY_TIMEOUT_SECONDS) -> bool:
    """POST an empty body to `url`; True on a 2xx answer."""
    # No proxies: HTTP(S)_PROXY in the pod must not send a localhost call elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
    request = urllib.request.Request(url, data=b"", method="POST", headers={"User-Agent": "ferry-fetcher"})
    try:
        with opener.open(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        log.warning("reload notification refused", url=url, status=exc.code)
        return False
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # HTTPException: the answer was not HTTP (BadStatusLine, a header line too long, ...).
        log.warning("reload notification failed", url=url, error=type(exc).__name__, reason=str(exc)[:200])
        return False
    log.info("reload notification sent", url=url, status=status)
    return True


def signal_processes(process: str, signal_name: str, *, proc_root: str = "/proc") -> list[int]:
    """Send `signal_name` to every process whose comm or argv[0] basename is `process`; return their pids."""
    signal_number = signal.Signals[signal_name]
    matched = find_processes(process, proc_root=proc_root)
    if not matched:
        log.warning(
            "no process to signal; the pod needs shareProcessNamespace: true",
            process=process,
            signal=signal_name,
        )
        return []
    sent: list[int] = []
    for pid in matched:
        try:
            os.kill(pid, signal_number)
        except ProcessLookupError:
            continue
        except PermissionError:
            log.warning(
                "not allowed to signal the process; run the fetcher as the app's user",
                process=process,
                pid=pid,
                signal=signal_name,
            )
            continue
        sent.append(pid)
    log.info("signal sent", process=process, signal=signal_name, pids=[str(pid) for pid in sent])
    return sent


def find_processes(process: str, *, proc_root: str = "/proc") -> list[int]:
    """Pids (other than our own) whose /proc/<pid>/comm, or argv[0]'s basename, equals `process`."""
    own = os.getpid()
    found: list[int] = []
    try:
        entries = list(Path(proc_root).iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        if process in _process_names(entry):
            found.append(int(entry.name))
    return sorted(found)


def _process_names(entry: Path) -> set[str]:
    names: set[str] = set()
    try:
        names.add((entry / "comm").read_text(errors="replace").strip())
    except OSError:
        pass
    try:
        argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        argv0 = ""
    if argv0:
        names.add(os.path.basename(argv0))
    return names
