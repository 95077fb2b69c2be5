"""fetcher.contract.regions: the real region list (as botocore's), typos caught with a suggestion, bounded text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fetcher.contract import SpecError, build_spec, spec_from_secret_provider_class
from fetcher.contract.regions import KNOWN_REGIONS, is_known_region, partition_of, region_problem, suggest_region

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_table_matches_the_installed_botocore() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/gen_regions.py", "--check"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("region", "partition"),
    [
        ("eu-west-1", "aws"),
        ("cn-northwest-1", "aws-cn"),
        ("us-gov-west-1", "aws-us-gov"),
        ("us-gov-east-1", "aws-us-gov"),
    ],
)
def test_regions_of_every_partition_are_known(region: str, partition: str) -> None:
    assert is_known_region(region)
    assert partition_of(region) == partition
    assert region_problem(region) is None


def test_global_pseudo_regions_are_not_regions() -> None:
    every = {region for regions in KNOWN_REGIONS.values() for region in regions}
    assert not any(region.endswith("-global") for region in every)
    assert not is_known_region("aws-global")


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("eu-wset-1", "eu-west-1"),
        ("us-gov-wset-1", "us-gov-west-1"),
        ("cn-nrth-1", "cn-north-1"),
        ("EU-WEST-1", "eu-west-1"),
    ],
)
def test_a_typo_gets_did_you_mean(typo: str, meant: str) -> None:
    assert suggest_region(typo) == meant
    assert region_problem(typo) == f"{typo!r} is not an AWS region; did you mean {meant!r}?"


def test_a_name_far_from_any_region_gets_an_example_instead() -> None:
    message = region_problem("mars-north-1")
    assert message is not None
    assert "did you mean" not in message
    assert "write it like us-east-1" in message


def test_the_message_stays_short_whatever_the_input() -> None:
    message = region_problem("eu-west-1" * 100_000)
    assert message is not None
    assert len(message) < 200


def test_spec_validation_catches_the_typo_at_admission_time() -> None:
    with pytest.raises(SpecError) as caught:
        build_spec(objects=[{"objectName": "db", "objectType": "secretsmanager"}], region="eu-wset-1")
    assert "region: 'eu-wset-1' is not an AWS region; did you mean 'eu-west-1'?" in str(caught.value)
    with pytest.raises(SpecError) as caught:
        build_spec(
            objects=[{"objectName": "db", "objectType": "secretsmanager"}],
            region="us-gov-west-1",
            failover_region="us-gov-eats-1",
        )
    assert "did you mean 'us-gov-east-1'?" in str(caught.value)


def test_a_secret_provider_class_region_typo_names_its_field() -> None:
    manifest = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "app"},
        "spec": {
            "provider": "aws",
            "parameters": {"objects": "- objectName: db\n  objectType: secretsmanager\n", "region": "ap-southeats-1"},
        },
    }
    with pytest.raises(SpecError) as caught:
        spec_from_secret_provider_class(manifest)
    assert "spec.parameters.region: 'ap-southeats-1' is not an AWS region; did you mean 'ap-southeast-1'?" in str(
        caught.value
    )
