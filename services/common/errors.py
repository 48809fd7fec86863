"""One error hierarchy for the services: handlers raise, one interceptor turns errors into statuses.

Each error carries its gRPC code, a human message (what was wrong) and a stable `reason` that
clients can match on (sent as trailing metadata `mcrave-reason`).
"""

from __future__ import annotations

import grpc

REASON_KEY = "mcrave-reason"


class ServiceError(Exception):
    """Base: a request the service refuses, with the status code that says why."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class InvalidArgument(ServiceError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class NotFound(ServiceError, LookupError):
    code = grpc.StatusCode.NOT_FOUND


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


def from_status(code: grpc.StatusCode, message: str, reason: str) -> ServiceError:
    """A status received from another service, passed on to our caller with its code."""
    error = ServiceError(message, reason)
    error.code = code
    return error
