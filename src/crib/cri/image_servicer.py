"""ImageService: validate, make one domain call, convert the result."""

from __future__ import annotations

from crib._proto.runtime.v1 import api_pb2_grpc
from crib.cri.server import fill_unimplemented


@fill_unimplemented("ImageService")
class ImageServicer(api_pb2_grpc.ImageServiceServicer):  # type: ignore[misc]
    """Image RPCs arrive with the image issue; until then each answers UNIMPLEMENTED."""


__all__ = ["ImageServicer"]
