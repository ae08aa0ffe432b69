#!/usr/bin/env python3
"""Build a busybox image offline, from Debian's busybox-static, as an OCI layout tar for `crib image import`.

    .venv/bin/python examples/busybox_image.py /tmp/busybox-oci.tar

The image is the one crib's own tests use (tests/fixtures/images.py): /bin/busybox with every applet,
/etc/passwd and /etc/group, Cmd ["sh"]. No registry and no network are needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.images import busybox_layer, host_platform
from tests.fixtures.oci import build_image, write_oci_layout_tar

DEFAULT_NAME = "example.com/busybox:latest"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="the OCI layout tar to write")
    parser.add_argument("--name", default=DEFAULT_NAME,
                        help=f"reference recorded in the layout [{DEFAULT_NAME}]")
    args = parser.parse_args()
    image = build_image([busybox_layer(hardlink_applets=True)], platform=host_platform())
    write_oci_layout_tar(args.dest, {args.name: image})
    print(f"wrote {args.dest}: {args.name} (image id {image.image_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
