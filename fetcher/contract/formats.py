"""Extra output formats on the volume: a dotenv file a POSIX shell can source, and one JSON document.

Some apps want their values as environment variables or one document, and cannot have a Kubernetes Secret.
Pure functions over the rendered file set, so the documents land in the same atomic swap as the files and
never disagree with them. Rules: docs/configuration.md ("Output formats").
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from fetcher.contract.paths import unsafe_path_reason
from fetcher.contract.problems import FerryError, join_problems, listed, quote

DOTENV_FORMAT = "dotenv"
JSON_FORMAT = "json"
FORMATS = (DOTENV_FORMAT, JSON_FORMAT)
MAX_NAMES_LISTED = 8
# The file each format is written to unless the request names another ("dotenv=app.env").
DEFAULT_FORMAT_FILES = {DOTENV_FORMAT: "secrets.env", JSON_FORMAT: "secrets.json"}
MAX_OUTPUT_FORMATS_CHARS = 1024

# Variables a shell (dash, bash), glibc or the dynamic loader acts on, or that bash keeps read-only or rewrites
# itself (`_`, RANDOM, UID, ...): sourcing them would change how the app's command is found, parsed, linked or
# run, or would fail. Sources: bash(1) "Shell Variables", dash(1), glibc's UNSECURE_ENVVARS (unsecvars.h, the
# names it clears for setuid programs) and ld.so(8). What a language runtime or the app reads (PYTHONPATH,
# NODE_OPTIONS, JAVA_TOOL_OPTIONS, LANG, TZ, proxies, ...) is the app's business: see docs/configuration.md.
RESERVED_ENV_KEYS = frozenset(
    {
        # Shell: set or read-only in bash, or changing how commands are looked up, parsed or run.
        "_",
        "AUTO_RESUME",
        "BASHOPTS",
        "CDPATH",
        "CHILD_MAX",
        "COLUMNS",
        "COPROC",
        "DIRSTACK",
        "ENV",
        "EPOCHREALTIME",
        "EPOCHSECONDS",
        "EUID",
        "EXECIGNORE",
        "FCEDIT",
        "FIGNORE",
        "FUNCNAME",
        "FUNCNEST",
        "GLOBIGNORE",
        "GLOBSORT",
        "GROUPS",
        "HISTCMD",
        "HISTCONTROL",
        "HISTFILE",
        "HISTFILESIZE",
        "HISTIGNORE",
        "HISTSIZE",
        "HISTTIMEFORMAT",
        "HOME",
        "HOSTFILE",
        "HOSTNAME",
        "HOSTTYPE",
        "IFS",
        "IGNOREEOF",
        "INPUTRC",
        "LINENO",
        "LINES",
        "MACHTYPE",
        "MAIL",
        "MAILCHECK",
        "MAILPATH",
        "OLDPWD",
        "OPTARG",
        "OPTERR",
        "OPTIND",
        "OSTYPE",
        "PATH",
        "PIPESTATUS",
        "POSIXLY_CORRECT",
        "PPID",
        "PROMPT_COMMAND",
        "PROMPT_DIRTRIM",
        "PS0",
        "PS1",
        "PS2",
        "PS3",
        "PS4",
        "PWD",
        "RANDOM",
        "REPLY",
        "SECONDS",
        "SHELL",
        "SHELLOPTS",
        "SHLVL",
        "SRANDOM",
        "TIMEFORMAT",
        "TMOUT",
        "UID",
        # glibc and the dynamic loader (LD_* below): libraries, locales, resolver and temporary files.
        "ARGP_HELP_FMT",
        "DATEMSK",
        "GCONV_PATH",
        "GETCONF_DIR",
        "GMON_OUT_PREFIX",
        "HESIOD_CONFIG",
        "HES_DOMAIN",
        "HOSTALIASES",
        "I18NPATH",
        "LOCALDOMAIN",
        "LOCPATH",
        "MSGVERB",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "SEV_LEVEL",
        "TMPDIR",
        "TZDIR",
    }
)

# Whole families: BASH_ENV, BASH_XTRACEFD, ...; every loader variable (LD_PRELOAD, LD_AUDIT, ...); glibc's
# malloc and tunables (MALLOC_*, GLIBC_TUNABLES); bash's completion and readline variables.
RESERVED_ENV_PREFIXES = ("BASH", "LD_", "MALLOC_", "GLIBC_", "COMP_", "READLINE_")


def is_reserved_env_key(key: str) -> bool:
    """Whether sourcing `key` would change how the shell, glibc or the loader behaves."""
    return key in RESERVED_ENV_KEYS or key.startswith(RESERVED_ENV_PREFIXES)


_NOT_KEY_CHARACTER = re.compile(r"[^A-Z0-9_]", re.ASCII)


class FormatError(FerryError, ValueError):
    """The file set cannot be written in a requested format; the message names the files and the fix."""


def parse_output_formats(raw: object) -> tuple[tuple[str, str], ...]:
    """``"dotenv,json"`` or ``"dotenv=app.env"`` (annotation, SPC parameter) or ``{format: file}`` (the spec's JSON).

    Returns (format, file name) pairs sorted by format; raises FormatError saying what to write instead.
    """
    if raw is None or raw == "":
        return ()
    pairs: list[tuple[str, str]] = []
    if isinstance(raw, Mapping):
        pairs = [(str(fmt), str(name)) for fmt, name in raw.items()]
    elif isinstance(raw, str):
        if len(raw) > MAX_OUTPUT_FORMATS_CHARS:
            raise FormatError(f"is longer than {MAX_OUTPUT_FORMATS_CHARS} characters; write e.g. dotenv,json")
        for item in raw.split(","):
            fmt, sep, name = item.strip().partition("=")
            fmt = fmt.strip().lower()
            if not fmt:
                continue
            pairs.append((fmt, name.strip() if sep else DEFAULT_FORMAT_FILES.get(fmt, "")))
    else:
        raise FormatError("must be a comma-separated string such as dotenv,json")
    chosen: dict[str, str] = {}
    for fmt, name in pairs:
        if fmt not in FORMATS:
            raise FormatError(f"{quote(fmt)} is not an output format; use {' or '.join(FORMATS)} (e.g. dotenv,json)")
        if fmt in chosen:
            raise FormatError(f"{fmt} is listed twice; list each format once")
        _check_document_name(fmt, name)
        chosen[fmt] = name
    if len(set(chosen.values())) < len(chosen):
        raise FormatError("dotenv and json must be written to different files")
    return tuple(sorted(chosen.items()))


def _check_document_name(fmt: str, name: str) -> None:
    """A document's name follows the rules of every file name (fetcher.contract.paths), and is one plain name."""
    reason = "contains a '/'" if "/" in name else unsafe_path_reason(name)
    if reason:
        raise FormatError(
            f"{fmt}={quote(name)}: the file name {reason}; write a plain file name, e.g. {DEFAULT_FORMAT_FILES[fmt]}"
        )


def env_key(file_name: str) -> str:
    """The variable name for a file: upper-case, other characters -> ``_``, ``_`` before a leading digit."""
    key = _NOT_KEY_CHARACTER.sub("_", file_name.upper())
    return "_" + key if key[:1].isdigit() else key


def env_keys(file_names: Iterable[str]) -> dict[str, str]:
    """Variable name -> file name for every file; raises FormatError on collisions and reserved names."""
    keys: dict[str, str] = {}
    problems: list[str] = []
    for name in sorted(file_names):
        key = env_key(name)
        if is_reserved_env_key(key):
            problems.append(f"file {quote(name)} would set the shell variable {key}; give it an objectAlias")
        elif key in keys:
            problems.append(
                f"files {quote(keys[key])} and {quote(name)} both give the variable {key}; "
                "give one of them an objectAlias"
            )
        else:
            keys[key] = name
    if problems:
        raise FormatError("dotenv: " + join_problems(problems, MAX_NAMES_LISTED))
    return keys


def dotenv_document(files: Mapping[str, bytes]) -> bytes:
    """``KEY='value'`` lines, sorted by key, that ``set -a; . FILE`` turns into exactly these values."""
    texts = _texts(files, DOTENV_FORMAT, refuse_nul=True)
    lines = []
    for key, name in sorted(env_keys(files).items()):
        lines.append(f"{key}='" + texts[name].replace("'", "'\\''") + "'\n")
    return "".join(lines).encode("utf-8")


def json_document(files: Mapping[str, bytes]) -> bytes:
    """One JSON object: file name -> value as a string, keys sorted, UTF-8, ending in a newline."""
    texts = _texts(files, JSON_FORMAT, refuse_nul=False)
    return (json.dumps(texts, ensure_ascii=False, sort_keys=True, indent=2) + "\n").encode("utf-8")


def add_formats(
    files: Mapping[str, tuple[bytes, int]], formats: Mapping[str, str], mode: int
) -> dict[str, tuple[bytes, int]]:
    """The file set plus one document per requested format (format -> file name), all with `mode`.

    The documents are built from the files alone, so they land in the same swap as the files.
    """
    values = {name: content for name, (content, _) in files.items()}
    result = dict(files)
    for fmt, target in sorted(formats.items()):
        if fmt not in FORMATS:
            raise FormatError(f"unknown output format {quote(fmt)}; use {' or '.join(FORMATS)}")
        _check_document_name(fmt, target)
        if target in result:
            raise FormatError(f"{fmt}: the file name {quote(target)} is already used; choose another name for it")
        builder = dotenv_document if fmt == DOTENV_FORMAT else json_document
        result[target] = (builder(values), mode)
    return result


def _texts(files: Mapping[str, bytes], fmt: str, *, refuse_nul: bool) -> dict[str, str]:
    texts: dict[str, str] = {}
    binary: list[str] = []
    with_nul: list[str] = []
    for name, content in sorted(files.items()):
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            binary.append(name)
            continue
        if refuse_nul and "\0" in text:
            with_nul.append(name)
            continue
        texts[name] = text
    problems = []
    if binary:
        problems.append(
            f"{_names(binary)} {'is' if len(binary) == 1 else 'are'} not UTF-8 text and cannot be written as {fmt} "
            "without changing the bytes; read such values from their files"
        )
    if with_nul:
        problems.append(
            f"{_names(with_nul)} {'holds' if len(with_nul) == 1 else 'hold'} a NUL byte, which no shell variable can "
            "hold; read such values from their files"
        )
    if problems:
        raise FormatError(f"{fmt}: " + join_problems(problems, MAX_NAMES_LISTED))
    return texts


def _names(names: list[str]) -> str:
    return ("file " if len(names) == 1 else "files ") + listed(names, MAX_NAMES_LISTED)
