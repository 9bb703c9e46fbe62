"""What the ImageNet task's JPEG decoding costs per rank: time per image and bytes of the eval set.

configs/imagenet_inception_v1.yaml runs one rank per GPU on a 4-GPU node. Each
rank decodes its eval set once into a uint8 array (``images.decode_all``: N x S
x S x 3 bytes, threads) and decodes every SGLD minibatch's training JPEGs on
access (``sampler.loader_workers`` DataLoader processes). This measures, on
generated JPEGs of ImageNet's typical size (500 x 375, quality 90, smooth
content with noise, as photographs compress), the seconds per image that
``load_image`` takes (decode in draft mode + resize to S) with 1 and 2 threads,
in interleaved rounds with the machine's load recorded, and the resident memory
the decoded eval set adds. From these it projects, for the config (N = 10,000, S
= 256, minibatch 256, 4 ranks per node): the eval set's bytes per rank and per
node, and the seconds one rank's minibatch takes to decode with W loader workers.

    python bench/imagenet_decode.py                 # 256 images, 3 rounds
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import BenchRecord, LoadWatch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from losskernel_dist.tasks.imagenet.images import decode_all, load_image  # noqa: E402


class _Files:
    """The two members of ImageFiles that decode_all reads (no labels needed here)."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> Path:
        return self.paths[i]


def make_jpegs(folder: Path, count: int, width: int, height: int, seed: int) -> list[Path]:
    """``count`` JPEGs with smooth colour fields plus noise (photograph-like entropy)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    paths = []
    for i in range(count):
        freq = rng.uniform(1, 6, size=(3, 2))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        base = np.stack([np.sin(2 * np.pi * (freq[c, 0] * xx + freq[c, 1] * yy) + phase[c])
                         for c in range(3)], axis=-1)
        pixels = 127.5 + 90 * base + rng.normal(0, 12, size=base.shape)
        path = folder / f"img_{i:05d}.JPEG"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--height", type=int, default=375)
    ap.add_argument("--size", type=int, default=256, help="S, the task's image_size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="decode threads to compare")
    ap.add_argument("--project-n", type=int, default=10_000, help="eval images of the config")
    ap.add_argument("--project-batch", type=int, default=256, help="SGLD minibatch")
    ap.add_argument("--project-ranks", type=int, default=4, help="ranks (GPUs) per node")
    ap.add_argument("--project-workers", default="0,4,8", help="loader_workers to project")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    record = BenchRecord("imagenet_decode", vars(args))

    with tempfile.TemporaryDirectory(prefix="lk-decode-") as tmp:
        paths = make_jpegs(Path(tmp), args.images, args.width, args.height, seed=0)
        jpeg_bytes = sum(p.stat().st_size for p in paths) / len(paths)
        files = _Files(paths, args.size)
        load_image(paths[0], args.size)  # Pillow's plugins imported outside the timing
        rounds: dict[str, list[dict]] = {str(t): [] for t in threads}
        for _ in range(args.rounds):
            for t in threads:  # interleaved: every round times each thread count once
                watch = LoadWatch()
                rss0 = rss_bytes()
                t0 = time.perf_counter()
                pixels = decode_all(files, t)
                seconds = time.perf_counter() - t0
                rounds[str(t)].append({"seconds": seconds, "per_image_s": seconds / len(paths),
                                       "rss_added_bytes": rss_bytes() - rss0, **watch.stop()})
                del pixels

    def best(t: int) -> dict:
        quiet = [r for r in rounds[str(t)] if not r["loaded"]] or rounds[str(t)]
        return min(quiet, key=lambda r: r["seconds"])

    one = best(threads[0])
    per_image_s = one["per_image_s"]  # one thread: the cost one decoding process pays
    eval_bytes = args.project_n * args.size * args.size * 3
    result = {
        "jpeg_bytes_mean": jpeg_bytes,
        "array_bytes_per_image": args.size * args.size * 3,
        "rounds": rounds,
        "best": {t: best(int(t)) for t in rounds},
        "all_rounds_loaded": all(r["loaded"] for rs in rounds.values() for r in rs),
        "projection": {
            "eval_set_bytes_per_rank": eval_bytes,
            "eval_set_gib_per_rank": eval_bytes / 2**30,
            "eval_set_gib_per_node": args.project_ranks * eval_bytes / 2**30,
            "eval_decode_s_per_rank_one_thread": args.project_n * per_image_s,
            "minibatch_decode_s": {
                w: args.project_batch * per_image_s / max(1, int(w))
                for w in args.project_workers.split(",")},
        },
    }
    path = record.write(result)
    p = result["projection"]
    print(f"{per_image_s * 1e3:.2f} ms per image (1 thread); eval set "
          f"{p['eval_set_gib_per_rank']:.2f} GiB per rank, {p['eval_set_gib_per_node']:.2f} GiB "
          f"per node; minibatch decode {p['minibatch_decode_s']} s; record {path}")


if __name__ == "__main__":
    main()
