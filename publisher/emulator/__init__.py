"""A local, Hugging Face Hub-compatible HTTP server for tests and offline publishing.

Stdlib only and independent of the rest of ``publisher``. The real ``huggingface_hub`` client talks to it
when pointed at ``hub.url`` with ``HF_HUB_DISABLE_XET=1`` set before it is imported::

    from publisher.emulator import HubEmulator

    with HubEmulator(root=Path("hub-data"), tokens={"hf_write": ("alice", "write")}, port=0) as hub:
        HfApi(endpoint=hub.url, token="hf_write").create_repo("alice/model")
"""

from .server import HubEmulator
from .storage import HubError, RepoId, Storage

__all__ = ["HubEmulator", "HubError", "RepoId", "Storage"]
