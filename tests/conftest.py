"""Shared pytest setup.

``HF_HUB_DISABLE_XET`` is read once, when ``huggingface_hub`` is imported, so it is set here before any
other import (docs/hub-protocol.md §0): the client then uploads through the LFS path the emulator serves.
"""

import os

os.environ["HF_HUB_DISABLE_XET"] = "1"
# The measure stage (perplexity, SRS, latency) is exercised by the tests that ask for it (tests/test_measure_stage.py);
# every other CLI test checks pruning and publishing only, so it skips measurement unless it says otherwise.
os.environ.setdefault("PUBLISH_PRUNED_SKIP_EVAL", "ppl,srs,latency")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from publisher.emulator import HubEmulator  # noqa: E402

HUB_USER = "test-user"
HUB_WRITE_TOKEN = "hf_test_write_token"
HUB_READ_TOKEN = "hf_test_read_token"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubEmulator]:
    """A started Hub emulator storing its data under ``tmp_path / "hub"``; stopped after the test."""
    tokens = {HUB_WRITE_TOKEN: (HUB_USER, "write"), HUB_READ_TOKEN: (HUB_USER, "read")}
    with HubEmulator(root=tmp_path / "hub", tokens=tokens, port=0) as emulator:
        yield emulator
