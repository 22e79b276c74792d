"""A local, Hugging Face Hub-compatible HTTP server for tests and offline publishing.

Stdlib only and independent of the rest of ``publisher``. The real ``huggingface_hub`` client talks to it
when pointed at ``hub.url`` with ``HF_HUB_DISABLE_XET=1`` set before it is imported::

    from publisher.emulator import HubEmulator

    with HubEmulator(root=Path("hub-data"), tokens={"hf_write": ("alice", "write")}, port=0) as hub:
        HfApi(endpoint=hub.url, token="hf_write").create_repo("alice/model")
        hub.faults.add(r"/commit/", kind="status", status=503, times=2)   # fault injection (faults.py)
        hub.requests[-1]                                                   # (method, path, status) log
        hub.storage.changed_paths(RepoId("model", "alice", "model"), oid)  # what a commit changed

Modules: ``server`` (HTTP plumbing, repos, uploads, downloads), ``refs_api`` (branches, tags, PRs),
``collections_api``, ``faults``, ``storage`` (on-disk state).
"""

from .faults import Fault, FaultRegistry
from .server import HubEmulator, RequestRecord
from .storage import HubError, RepoId, Storage

__all__ = ["Fault", "FaultRegistry", "HubEmulator", "HubError", "RepoId", "RequestRecord", "Storage"]
