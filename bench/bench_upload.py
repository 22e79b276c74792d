"""Upload benchmark: push a synthetic checkpoint to the Hub emulator; peak memory and speed vs a plain copy.

    .venv/bin/python bench/bench_upload.py                 # 2 GB in 4 .safetensors-named files
    .venv/bin/python bench/bench_upload.py --size-gb 0.5 --files 2 --json

What it measures, in one run:

* copy: `shutil.copyfile` of the same files into another folder (the local disk's speed), then deleted;
* push: `publisher.hub.publish.publish_run` (hashing, preupload, LFS PUTs, commit, remote verification) to
  the emulator, run in a fresh subprocess; its peak RSS above its own baseline is VmHWM (end) - VmRSS (just
  before the push, after imports), both from /proc/self/status. The emulator runs in another process.

Target: peak RSS above baseline < 300 MB (the upload streams from disk). Everything is written under
a temporary folder (`--tmp`, default $TMPDIR) and removed at the end; it needs ~2.1× the size free.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 8 << 20
TARGET_MB = 300

PUSHER = r"""
import json, os, sys, time
os.environ["HF_HUB_DISABLE_XET"] = "1"
from pathlib import Path
from huggingface_hub import HfApi
from huggingface_hub.utils import disable_progress_bars
from publisher.hub.publish import PushOptions, publish_run
from publisher.results import FileDigest

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
disable_progress_bars()
endpoint, folder, digests = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
files = {name: FileDigest(**d) for name, d in digests.items()}
api = HfApi(endpoint=endpoint, token=os.environ["BENCH_TOKEN"])
baseline = status("VmRSS")
started = time.perf_counter()
record = publish_run(api, "bench/checkpoint", folder, files, private=False, message="bench",
                     options=PushOptions(verify_sparsity=False))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "baseline_rss": baseline, "peak_rss": status("VmHWM"),
                  "commit": record.commit, "verified_files": record.verified_files}))
"""


def write_checkpoint(folder: Path, size: int, files: int) -> dict[str, dict]:
    """Random bytes in `files` .safetensors-named files totalling `size` bytes; returns name -> digest."""
    import hashlib

    folder.mkdir(parents=True)
    digests = {}
    per_file = size // files
    for i in range(files):
        name = f"model-{i + 1:05d}-of-{files:05d}.safetensors"
        digest, left = hashlib.sha256(), per_file
        with open(folder / name, "wb") as f:
            while left > 0:
                block = os.urandom(min(CHUNK, left))
                digest.update(block)
                f.write(block)
                left -= len(block)
        digests[name] = {"sha256": digest.hexdigest(), "size": per_file}
    return digests


def timed_copy(src: Path, dst: Path) -> float:
    dst.mkdir()
    started = time.perf_counter()
    for path in sorted(src.iterdir()):
        shutil.copyfile(path, dst / path.name)
    os.sync()
    return time.perf_counter() - started


def start_emulator(root: Path, token: str) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "BENCH_TOKEN": token, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "publisher.emulator", "--root", str(root), "--port", "0",
                             "--user", "bench", "--token-env", "BENCH_TOKEN"], env=env, stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if " at http://" not in line:
        proc.kill()
        raise RuntimeError(f"the emulator did not start: {line!r}")
    return proc, line.split(" at ", 1)[1].split()[0]


def proc_peak_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run(size: int, files: int, tmp: Path | None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-upload-", dir=tmp))
    try:
        free = shutil.disk_usage(work).free
        if free < 2.2 * size:
            raise SystemExit(f"need {2.2 * size / 1e9:.1f} GB free in {work}, have {free / 1e9:.1f} GB")
        digests = write_checkpoint(work / "ckpt", size, files)
        copy_s = timed_copy(work / "ckpt", work / "copy")
        shutil.rmtree(work / "copy")
        token = f"hf_bench_{secrets.token_hex(8)}"
        emulator, url = start_emulator(work / "hub", token)
        try:
            env = {**os.environ, "BENCH_TOKEN": token, "PYTHONPATH": str(ROOT)}
            out = subprocess.run([sys.executable, "-c", PUSHER, url, str(work / "ckpt"), json.dumps(digests)],
                                 env=env, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise RuntimeError(f"push failed:\n{out.stderr[-3000:]}")
            push = json.loads(out.stdout.strip().splitlines()[-1])
            server_peak = proc_peak_rss(emulator.pid)
        finally:
            emulator.terminate()
            emulator.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    above = push["peak_rss"] - push["baseline_rss"]
    return {
        "bytes": size, "files": files,
        "copy_s": round(copy_s, 3), "copy_MBps": round(size / copy_s / 1e6, 1),
        "push_s": round(push["seconds"], 3), "push_MBps": round(size / push["seconds"] / 1e6, 1),
        "push_vs_copy_throughput": round(copy_s / push["seconds"], 3),
        "pusher_baseline_rss_MB": round(push["baseline_rss"] / 1e6, 1),
        "pusher_peak_rss_MB": round(push["peak_rss"] / 1e6, 1),
        "pusher_peak_above_baseline_MB": round(above / 1e6, 1),
        "emulator_peak_rss_MB": round(server_peak / 1e6, 1) if server_peak else None,
        "target_MB": TARGET_MB, "within_target": above / 1e6 < TARGET_MB,
        "verified_files": push["verified_files"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="total checkpoint size (default 2)")
    parser.add_argument("--files", type=int, default=4, help="number of .safetensors files (default 4)")
    parser.add_argument("--tmp", type=Path, help="where to put the temporary data (default: $TMPDIR)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    result = run(int(args.size_gb * 1e9), args.files, args.tmp)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"checkpoint      {result['bytes'] / 1e9:.2f} GB in {result['files']} files")
        print(f"plain copy      {result['copy_s']:.2f} s  ({result['copy_MBps']} MB/s)")
        print(f"push            {result['push_s']:.2f} s  ({result['push_MBps']} MB/s; "
              f"{result['push_vs_copy_throughput']:.2f}x the copy's throughput; hashing, upload, verify)")
        print(f"pusher RSS      baseline {result['pusher_baseline_rss_MB']} MB, peak {result['pusher_peak_rss_MB']} MB"
              f" -> {result['pusher_peak_above_baseline_MB']} MB above baseline (target < {TARGET_MB} MB: "
              f"{'ok' if result['within_target'] else 'MISSED'})")
        print(f"emulator RSS    peak {result['emulator_peak_rss_MB']} MB (separate process)")
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
