"""Pull benchmark: a 5-layer ~200 MB image from a loopback registry, crib vs containerd, empty stores.

    .venv/bin/python -m bench pull [--runs 5] [--size-mb 200] [--layers 5] [--json FILE]
    .venv/bin/python bench/pull.py   (same thing)

The image comes from tests.fixtures.images.benchmark_image (busybox plus data layers of alternating
compressible text and incompressible random files, gzip), pushed to a private docker-registry on
127.0.0.1. Each run starts the runtime on an empty root and times one CRI PullImage through the same
generated gRPC stub; crib and containerd alternate. Prints medians, p95, the ratio crib/containerd and
crib's peak daemon RSS. Needs root (containerd) and the Debian packages of `make venv`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/pull.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from crib._proto.runtime.v1 import api_pb2 as api
from tests.fixtures import images as img
from tests.fixtures.registry import LocalRegistry

MiB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pull", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=200, help="uncompressed size of the image")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="crib-bench-pull-") as tmp:
        base = Path(tmp)
        started = time.monotonic()
        image = img.benchmark_image(total_size=args.size_mb * MiB, layer_count=args.layers, level=1)
        raw = sum(len(layer.tar_bytes()) for layer in image.layers)
        packed = sum(layer.size for layer in image.layers)
        print(f"built the image in {time.monotonic() - started:.1f}s: {len(image.layers)} layers, "
              f"{raw / MiB:.1f} MiB uncompressed, {packed / MiB:.1f} MiB compressed")
        with LocalRegistry(base / "registry") as registry:
            ref = img.seed(registry, {img.BENCH: image}).reference(img.BENCH)
            crib_config = {"image": {"registries_conf": str(base / "registries.conf")}, "log_level": "info"}

            def pull(rt: Any) -> dict[str, Any]:
                image_ref = rt.images.PullImage(api.PullImageRequest(image=api.ImageSpec(image=ref)),
                                                timeout=600).image_ref
                if image_ref != image.image_id:
                    raise RuntimeError(f"pulled {image_ref}, expected {image.image_id}")
                return {}

            contenders = [harness.crib(crib_config),
                          harness.containerd(mirrors={registry.host: registry.url})]
            results = harness.interleaved(contenders, args.runs, pull, base=base)
        summary = harness.report(
            f"PullImage of {ref.split('/', 1)[1]} ({len(image.layers)} layers, {raw / MiB:.0f} MiB, "
            f"{packed / MiB:.0f} MiB compressed), empty stores, {args.runs} runs each, interleaved",
            results, baseline="containerd")
        print(f"  crib peak daemon RSS: {summary['crib']['peak_rss_mib']:.1f} MiB")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
