"""Images: references, registries, the content store, layer unpacking, image records.

The public surface is ImageService (and the ImageUsers protocol it is given by the container service);
the modules behind it are listed in ARCHITECTURE.md.
"""

from crib.images.auth import Credentials
from crib.images.gc import GcResult
from crib.images.importer import ImportResult
from crib.images.progress import PullProgress
from crib.images.service import FsInfo, FsUsage, ImageService, ImageUsers, PruneResult

__all__ = [
    "Credentials",
    "FsInfo",
    "FsUsage",
    "GcResult",
    "ImageService",
    "ImageUsers",
    "ImportResult",
    "PruneResult",
    "PullProgress",
]
