"""Profiles shared by the analysis tests: one profiled run of sha256 per test session."""

from __future__ import annotations

import pytest

import dbtlab
from dbtlab import analysis
from tests.conftest import GUESTS

SHA = str(GUESTS / "bin/sha256")
SHA_ARGS = ["2048", "4"]
#: compress() calls for those arguments: 2048/64 = 32 blocks + 1 padding block, 4 rounds,
#: plus the "abc" known-answer test
SHA_COMPRESS_CALLS = 4 * (2048 // 64 + 1) + 1


@pytest.fixture(scope="session")
def sha_result():
    return dbtlab.run(SHA, SHA_ARGS, accel="llvm", profile=True)


@pytest.fixture(scope="session")
def sha_profile(sha_result):
    return analysis.from_result(sha_result)


@pytest.fixture(scope="session")
def sha_graph(sha_profile):
    return analysis.block_graph(sha_profile)


@pytest.fixture(scope="session")
def sha_profile_file(sha_profile, tmp_path_factory):
    path = tmp_path_factory.mktemp("profiles") / "sha256.json"
    sha_profile.save(path)
    return path
