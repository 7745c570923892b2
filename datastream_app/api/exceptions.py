"""Domain errors to HTTP: the one table, applied by DRF's exception handler."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import TooManyFieldsSent
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from datastream_app import exceptions as errors

# Most specific first: the first matching class decides.
HTTP_STATUSES: list[tuple[type[errors.DatastreamError], int]] = [
    (errors.InvalidArgument, status.HTTP_400_BAD_REQUEST),
    (errors.NotFound, status.HTTP_404_NOT_FOUND),
    (errors.AlreadyExists, status.HTTP_409_CONFLICT),
    (errors.LimitExceeded, status.HTTP_413_REQUEST_ENTITY_TOO_LARGE),
    (errors.PermissionDenied, status.HTTP_403_FORBIDDEN),
    (errors.Unauthenticated, status.HTTP_401_UNAUTHORIZED),
    (errors.Unavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (errors.Aborted, status.HTTP_409_CONFLICT),
]


def http_status(error: errors.DatastreamError) -> int:
    """The HTTP status for a domain error."""
    for cls, code in HTTP_STATUSES:
        if isinstance(error, cls):
            return code
    return status.HTTP_500_INTERNAL_SERVER_ERROR


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """JSON ``{"code", "detail"}`` for domain errors; DRF's handling for everything else."""
    if isinstance(exc, errors.DatastreamError):
        body: dict[str, Any] = {"code": exc.code, "detail": exc.message}
        if isinstance(exc, errors.NotFound) and exc.keys:
            body["keys"] = exc.keys
        headers = None
        if isinstance(exc, errors.Unauthenticated):
            # A 401 must name how to authenticate: the admin's session login.
            headers = {"WWW-Authenticate": 'Bearer realm="datastream"'}
        return Response(body, status=http_status(exc), headers=headers)
    if isinstance(exc, TooManyFieldsSent):
        # Django refuses more than DATA_UPLOAD_MAX_NUMBER_FIELDS query parameters
        # with an HTML page; repeated ``keys=`` reach that before our own limit.
        return Response(
            {"code": errors.LimitExceeded.code, "detail": "too many query parameters; send keys comma-separated"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, (OperationalError, InterfaceError)):
        return Response(
            {"code": "unavailable", "detail": "database unavailable; retry shortly"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "code" not in response.data:
        code = getattr(exc, "default_code", "error")
        if "detail" in response.data:
            response.data = {"code": code, "detail": response.data["detail"]}
        else:
            # Serializer field errors: keep them, with a summary line.
            response.data = {"code": "invalid_argument", "detail": "malformed request", "fields": response.data}
    return response
