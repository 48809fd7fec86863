"""mcrave: multichannel RAVE-style neural audio that infers missing channels.

This package never imports gRPC or protobuf code; services adapt it.
"""

__version__ = "0.1.0"
