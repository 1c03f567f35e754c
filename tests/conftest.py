"""Shared fixtures: the seeded `tiny` network and a bundled image, small enough for fast tests."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` run only with DEEPRESTORE_SLOW=1: the default suite keeps to its 10 minutes."""
    if os.environ.get("DEEPRESTORE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set DEEPRESTORE_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny():
    from deeprestore.networks import create_network

    return create_network("tiny", weights="random", seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def runs_in_tmp(tmp_path, monkeypatch):
    """Every run directory a test makes goes under its tmp_path."""
    monkeypatch.setenv("DEEPRESTORE_RUNS", str(tmp_path / "runs"))
