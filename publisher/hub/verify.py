"""Check what landed on the Hub against the local run: file list, sizes, hashes, and re-measured sparsity.

    >>> verify_remote(api, repo_id, commit, folder, files)              # PublishError on any mismatch
    >>> check = verify_sparsity(api, repo_id, commit, folder, files, results)
    >>> check.shard, check.layers, check.zeros

`verify_sparsity` downloads one weight shard (the smallest holding pruned tensors) into a temporary folder,
checks its sha256 (the client does not) and counts the zeros of every pruned tensor it holds: they must
equal the per-layer zeros of `results.json`.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoFile

from ..errors import PublishError
from ..hashing import sha256_file
from ..results import FileDigest, Results
from .retry import DEFAULT_POLICY, RetryPolicy, with_retries


def git_blob_sha1(path: Path) -> str:
    """The git object id the Hub reports for a regular (non-LFS) file."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def differences(remote: dict[str, RepoFile], folder: Path, files: dict[str, FileDigest]) -> dict[str, str]:
    """Local files whose remote copy is missing or differs: path -> why. Empty when all match."""
    problems = {}
    for name, digest in files.items():
        entry = remote.get(name)
        if entry is None:
            problems[name] = "missing"
        elif entry.size != digest.size:
            problems[name] = f"{entry.size} bytes remotely, {digest.size} locally"
        elif entry.lfs is not None and entry.lfs.sha256 != digest.sha256:
            problems[name] = "sha256 differs"
        elif entry.lfs is None and entry.blob_id != git_blob_sha1(folder / name):
            problems[name] = "content differs"
    return problems


def remote_files(api: HfApi, repo_id: str, revision: str, policy: RetryPolicy = DEFAULT_POLICY) -> dict[str, RepoFile]:
    tree = with_retries(lambda: list(api.list_repo_tree(repo_id, revision=revision, recursive=True)),
                        what="listing the remote files", policy=policy)
    return {e.path: e for e in tree if isinstance(e, RepoFile)}


def verify_remote(api: HfApi, repo_id: str, revision: str, folder: Path, files: dict[str, FileDigest],
                  policy: RetryPolicy = DEFAULT_POLICY) -> int:
    """Compare the remote tree at `revision` with the local files (sizes, sha256 or git blob id)."""
    problems = differences(remote_files(api, repo_id, revision, policy), folder, files)
    if problems:
        listed = "; ".join(f"{name} {why}" for name, why in problems.items())
        raise PublishError(f"remote files of {repo_id}@{revision[:12]} do not match the run: {listed}")
    return len(files)


@dataclass
class SparsityCheck:
    shard: str  # the weight file that was downloaded and measured
    layers: int  # pruned tensors counted in it
    zeros: int
    params: int


def pick_shard(folder: Path, files: dict[str, FileDigest], results: Results) -> tuple[str, list[str]] | None:
    """The smallest published weight file holding pruned tensors, and those tensors' names."""
    from ..prune.sparsity import weight_locations  # torch: imported only when measuring

    locations = weight_locations(folder)
    by_shard: dict[str, list[str]] = {}
    for layer in results.sparsity.layers:
        shard = locations.get(layer.name)
        if shard is None or shard not in files:
            raise PublishError(f"the run's pruned tensor {layer.name} is in no published weight file")
        by_shard.setdefault(shard, []).append(layer.name)
    if not by_shard:
        return None
    shard = min(by_shard, key=lambda name: (files[name].size, name))
    return shard, by_shard[shard]


def verify_sparsity(api: HfApi, repo_id: str, revision: str, folder: Path, files: dict[str, FileDigest],
                    results: Results, policy: RetryPolicy = DEFAULT_POLICY) -> SparsityCheck | None:
    """Download one weight shard at `revision` and re-count the zeros of its pruned tensors.

    None when the run pruned nothing. PublishError when the bytes or any tensor's zeros differ from the run.
    """
    from ..prune.sparsity import count_zeros
    from ..safetensors_io import SafetensorsError, SafetensorsFile

    picked = pick_shard(folder, files, results)
    if picked is None:
        return None
    shard, names = picked
    expected = {layer.name: layer for layer in results.sparsity.layers}
    with tempfile.TemporaryDirectory(prefix="publish-pruned-verify-") as tmp:
        path = Path(with_retries(lambda: api.hf_hub_download(repo_id, shard, revision=revision, cache_dir=tmp),
                                 what=f"download of {shard}", policy=policy))
        if sha256_file(path) != files[shard].sha256:
            raise PublishError(f"{repo_id}@{revision[:12]}: the downloaded {shard} does not hash to the run's sha256")
        problems, zeros, params = [], 0, 0
        try:
            remote = SafetensorsFile(path)
        except SafetensorsError as exc:
            raise PublishError(f"{repo_id}@{revision[:12]}: the downloaded {shard} is unreadable ({exc})") from None
        with remote:
            for name in names:
                if name not in remote.tensors:
                    problems.append(f"{name} missing from the remote {shard}")
                    continue
                counted = count_zeros(remote, name)
                want = expected[name]
                if (counted.zeros, counted.params) != (want.zeros, want.params):
                    problems.append(f"{name}: {counted.zeros}/{counted.params} zeros remotely, "
                                    f"results.json says {want.zeros}/{want.params}")
                zeros += counted.zeros
                params += counted.params
    if problems:
        raise PublishError(f"sparsity of the published weights of {repo_id}@{revision[:12]} does not match the "
                           f"run: {'; '.join(problems[:5])}")
    return SparsityCheck(shard=shard, layers=len(names), zeros=zeros, params=params)
