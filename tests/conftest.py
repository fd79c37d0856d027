"""Shared test configuration: the accelerators every behavioural test runs on, and the
shipped guest programs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "guests"

#: every accelerator the whole suite is parametrised over
ACCELS = ["interp", "llvm"]


def load_manifest() -> dict:
    with open(GUESTS / "manifest.json") as f:
        return json.load(f)


def guest_cases(libcs=("musl", "glibc")):
    """(program entry, libc, binary path) for every shipped binary."""
    out = []
    for p in load_manifest()["programs"]:
        for libc in libcs:
            b = p["binaries"].get(libc)
            if b:
                out.append((p, libc, str(GUESTS / b)))
    return out


@pytest.fixture(params=ACCELS)
def accel(request):
    return request.param


def pytest_collection_modifyitems(config, items):
    # DBTLAB_TEST_ACCELS=llvm runs only that accelerator's parametrisations
    only = os.environ.get("DBTLAB_TEST_ACCELS")
    if not only:
        return
    keep = set(only.split(","))
    for item in items:
        cs = getattr(item, "callspec", None)
        if cs and "accel" in cs.params and cs.params["accel"] not in keep:
            item.add_marker(pytest.mark.skip(reason=f"DBTLAB_TEST_ACCELS={only}"))
