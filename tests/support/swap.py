"""Self-checking file sets, a swap loop to kill, and readers that judge what they see.

Why it exists: "a reader never sees a half-written or mixed set" can only be
tested with content that proves its own integrity. Every file written here
carries its generation, its own name, its length and a SHA-256 of the rest, so
a reader (or a post-mortem after kill -9) can tell a torn file, a file of the
wrong name, and a set mixing two generations apart from a good set, without
knowing which generation it should be.

The swap loop runs in processes forked from a multiprocessing *forkserver*
(single-threaded, with `fetcher.writer` preloaded), so a kill test can start
a fresh writer in milliseconds, SIGKILL it at a random moment, and inspect the
directory; pytest's own threads (moto, the fault proxy) are never forked.
Used by tests/reliability/test_crash_safety.py and bench/kill_swap.py.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fetcher.logs import log
from fetcher.writer import DATA_LINK, DATA_LINK_TMP, swap_directory

# A set with a nested path (pathTranslation "False" keeps slashes) and sizes from tiny to 64 KiB,
# so a swap spends real time writing and a kill can land inside a file write.
FILE_NAMES = ("db-user", "db-password", "api.key", "tls/ca.crt", "tls/nested/client.pem", "big.bin")
_SIZES = {"big.bin": 64 * 1024, "tls/ca.crt": 8 * 1024}


def file_content(generation: int, name: str) -> bytes:
    size = _SIZES.get(name, 64 + (generation * 7919 + len(name) * 31) % 2048)
    header = f"gen={generation:09d} name={name} size={size}\n".encode()
    filler = hashlib.shake_256(f"{generation}/{name}".encode()).digest(size)
    body = header + filler
    return body + b"\nsha256=" + hashlib.sha256(body).hexdigest().encode() + b"\n"


def file_set(generation: int, names: tuple[str, ...] = FILE_NAMES) -> dict[str, tuple[bytes, int]]:
    return {name: (file_content(generation, name), 0o640 if name.endswith(".pem") else 0o644) for name in names}


class Torn(ValueError):
    """A file whose bytes do not prove themselves: torn, truncated or misnamed."""


def verify(name: str, data: bytes) -> int:
    """The generation a file claims, after checking it is whole and really is `name`."""
    body, marker, trailer = data.rpartition(b"\nsha256=")
    if not marker or hashlib.sha256(body).hexdigest().encode() + b"\n" != trailer:
        raise Torn(f"{name}: checksum mismatch ({len(data)} bytes)")
    header = body.split(b"\n", 1)[0].decode()
    fields = dict(part.split("=", 1) for part in header.split(" "))
    if fields.get("name") != name:
        raise Torn(f"{name}: holds the content of {fields.get('name')!r}")
    return int(fields["gen"])


@dataclass
class DirState:
    """A post-mortem of a target directory."""

    generation: int | None
    problems: list[str] = field(default_factory=list)
    # Generation directories other than the current one. The writer keeps the one a swap just
    # replaced (a reader that resolved ..data a moment earlier can still read it), so one is normal.
    retired: list[str] = field(default_factory=list)
    tmp_links: list[str] = field(default_factory=list)

    # Retired generations that are not a whole set: half-written, or half-deleted.
    partial: list[str] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        """Traces only an interrupted swap leaves: ..data_tmp, a partial generation, or more than one retired."""
        return bool(self.tmp_links or self.partial) or len(self.retired) > 1


def check_generation_dir(directory: Path, names: tuple[str, ...] = FILE_NAMES) -> tuple[set[int], list[str]]:
    """(generations found, problems) for one generation directory that should hold a whole set."""
    problems: list[str] = []
    generations: set[int] = set()
    for name in names:
        try:
            generations.add(verify(name, (directory / name).read_bytes()))
        except (OSError, Torn) as exc:
            problems.append(f"{directory.name}: {exc}")
    on_disk = sorted(str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file())
    if on_disk != sorted(names):
        problems.append(f"{directory.name}: the set holds {on_disk}, expected {sorted(names)}")
    if len(generations) > 1:
        problems.append(f"{directory.name}: mixed generations {sorted(generations)}")
    return generations, problems


def inspect_dir(target: Path, names: tuple[str, ...] = FILE_NAMES) -> DirState:
    """Is `target` one complete set of one generation, reachable through its top-level links?"""
    try:
        current = os.readlink(target / DATA_LINK)
    except OSError as exc:
        return DirState(None, [f"{DATA_LINK} unreadable: {exc}"])
    generations, problems = check_generation_dir(target / current, names)
    for top in sorted({name.split("/", 1)[0] for name in names}):
        link = target / top
        if not link.is_symlink() or os.readlink(link) != f"{DATA_LINK}/{top}":
            problems.append(f"top-level {top!r} is not the link {DATA_LINK}/{top}")
    for name in names:
        try:
            generations.add(verify(name, (target / name).read_bytes()))
        except (OSError, Torn) as exc:
            problems.append(f"through the top-level link: {exc}")
    if len(generations) > 1:
        problems.append(f"mixed generations {sorted(generations)}")
    entries = list(os.scandir(target))
    tmp_links = sorted(entry.name for entry in entries if entry.name.startswith(DATA_LINK_TMP))
    retired = sorted(
        entry.name
        for entry in entries
        if entry.name.startswith("..")
        and entry.name not in (DATA_LINK, current)
        and not entry.name.startswith(DATA_LINK_TMP)
        and entry.is_dir(follow_symlinks=False)
    )
    partial = [name for name in retired if check_generation_dir(target / name, names)[1]]
    return DirState(min(generations) if len(generations) == 1 else None, problems, retired, tmp_links, partial)


def swap_forever(target: str, first_generation: int, progress: Any, limit: int = 0) -> None:
    """The victim: swap generation after generation into `target` (until `limit` swaps, or forever)."""
    log.set_level("error")  # one info line per swap would dominate the loop's cost
    generation = first_generation
    while not limit or generation < first_generation + limit:
        swap_directory(target, file_set(generation))
        progress.value = generation
        generation += 1


def restart_and_check(target: Path, generation: int) -> list[str]:
    """Do what the next fetcher start does (a swap, which cleans first), then check nothing is left over."""
    swap_directory(target, file_set(generation))
    state = inspect_dir(target)
    problems = list(state.problems)
    if state.generation != generation:
        problems.append(f"current generation is {state.generation}, expected {generation}")
    if state.interrupted:
        problems.append(f"leftovers after restart: {state.tmp_links + state.retired}, partial {state.partial}")
    return problems


_CONTEXT: Any = None


def forkserver() -> Any:
    """A forkserver context with the writer preloaded (started once per process)."""
    global _CONTEXT
    if _CONTEXT is None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["fetcher.writer", __name__])
        _CONTEXT = context
    return _CONTEXT


@dataclass
class KillReport:
    iterations: int = 0
    mid_swap: int = 0  # kills that left traces of an unfinished swap: proof the kill landed inside one
    inconsistent: list[str] = field(default_factory=list)
    not_cleaned: list[str] = field(default_factory=list)
    generations_seen: set[int] = field(default_factory=set)


def kill_loop(target: Path, iterations: int, seed: int, max_delay: float = 0.03) -> KillReport:
    """Start a writer, SIGKILL it at a random moment, check the directory, clean up, repeat."""
    context = forkserver()
    rng = random.Random(seed)
    report = KillReport()
    swap_directory(target, file_set(0))
    generation = 1
    for iteration in range(iterations):
        progress = context.Value("q", -1, lock=False)
        writer = context.Process(target=swap_forever, args=(str(target), generation, progress), daemon=True)
        writer.start()
        # Let it reach its swap loop, then kill at a uniformly random moment of the next swaps.
        deadline = 200
        while progress.value < generation and deadline:
            threading.Event().wait(0.005)
            deadline -= 1
        threading.Event().wait(rng.uniform(0, max_delay))
        writer.kill()
        writer.join(5)
        generation = max(generation, progress.value) + 1
        report.iterations += 1
        state = inspect_dir(target)
        if state.problems:
            report.inconsistent.append(f"iteration {iteration}: {state.problems}")
        if state.interrupted:
            report.mid_swap += 1
        if state.generation is not None:
            report.generations_seen.add(state.generation)
        problems = restart_and_check(target, generation)
        if problems:
            report.not_cleaned.append(f"iteration {iteration}: {problems}")
        generation += 1
    return report


@dataclass
class ReaderReport:
    set_reads: int = 0
    file_reads: int = 0
    retries: int = 0  # ENOENT: the generation was removed between resolving ..data and opening
    top_level_missing: int = 0
    violations: list[str] = field(default_factory=list)
    generations: set[int] = field(default_factory=set)


def read_sets_until(
    target: Path, stop: threading.Event, report: ReaderReport, names: tuple[str, ...] = FILE_NAMES
) -> None:
    """The documented way to read several files of one generation: resolve ..data once, read below it."""
    last = -1
    while not stop.is_set():
        try:
            generation_dir = target / os.readlink(target / DATA_LINK)
            contents: Mapping[str, bytes] = {name: (generation_dir / name).read_bytes() for name in names}
        except FileNotFoundError:
            report.retries += 1
            continue
        report.set_reads += 1
        try:
            generations = {verify(name, data) for name, data in contents.items()}
        except Torn as exc:
            report.violations.append(f"torn: {exc}")
            continue
        if len(generations) != 1:
            report.violations.append(f"mixed set: {sorted(generations)}")
            continue
        (seen,) = generations
        if seen < last:
            report.violations.append(f"went back in time: {seen} after {last}")
        last = seen
        report.generations.add(seen)


def read_files_until(
    target: Path, stop: threading.Event, report: ReaderReport, names: tuple[str, ...] = FILE_NAMES
) -> None:
    """An app that opens each path on its own: every file must be whole, whatever its generation."""
    while not stop.is_set():
        for name in names:
            try:
                data = (target / name).read_bytes()
            except FileNotFoundError:
                report.top_level_missing += 1
                continue
            report.file_reads += 1
            try:
                verify(name, data)
            except Torn as exc:
                report.violations.append(f"torn via top-level path: {exc}")
