"""Ferry's fetcher: cloud secrets and parameters, written into a pod's volume.

This file imports nothing, so the webhook can import the spec model (`fetcher.contract`) without a cloud
client; it holds `version()`. Details: docs/fetcher.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

PRODUCT = "ferry"
DISTRIBUTION = "ferry-secrets"  # the name on the package index (pyproject.toml)


def version() -> str:
    """Ferry's version: pyproject.toml's, read from the installed metadata (the images write it too)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (ferry is not installed)"


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """`--version` on a command line; the metadata is read only when the option is given."""
    import argparse

    class _Version(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
            print(f"{PRODUCT} {version()}")
            parser.exit()

    parser.add_argument("--version", action=_Version, nargs=0, default=argparse.SUPPRESS, help="print the version")


def command_name(package: str, argv0: str | None = None) -> str:
    """The name the user typed: the console script's (`ferry-fetcher`), or `python -m <package>`.

    argparse's default is the basename of argv[0], which under `python -m` is `__main__.py`.
    """
    import os
    import sys

    name = os.path.basename(sys.argv[0] if argv0 is None else argv0)
    return f"python -m {package}" if name in ("", "__main__.py", "-c") else name
