"""Every failure Ferry reports on purpose is a FerryError, so one `except` at each edge catches them all."""

from __future__ import annotations

import pytest

from fetcher.contract import FerryError
from fetcher.contract.formats import FormatError, parse_output_formats
from fetcher.contract.secret_objects import SecretObjectsError
from fetcher.contract.spc import ManifestError


@pytest.mark.parametrize("error", [SecretObjectsError, ManifestError, FormatError])
def test_the_spec_errors_join_the_ferry_error_tree(error: type[Exception]) -> None:
    assert issubclass(error, FerryError)
    assert issubclass(error, ValueError), "callers that catch ValueError still do"


def test_a_bad_output_format_is_caught_as_a_ferry_error() -> None:
    with pytest.raises(FerryError):
        parse_output_formats("yaml")
