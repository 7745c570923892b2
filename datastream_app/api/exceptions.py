"""Domain errors to HTTP (each error class names its status), applied by DRF's exception handler."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import TooManyFieldsSent
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf_errors
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from datastream_app import exceptions as errors
from datastream_app.edge import database_outage


def http_status(error: errors.DatastreamError) -> int:
    """The HTTP status for a domain error: the one its class names."""
    return error.http_status


def error_body(error: errors.DatastreamError) -> dict[str, Any]:
    """The JSON body of a domain error: ``{"code", "detail"}``, plus ``keys`` for unknown keys."""
    body: dict[str, Any] = {"code": error.code, "detail": error.message}
    if isinstance(error, errors.NotFound) and error.keys:
        body["keys"] = error.keys
    return body


def _domain_error(exc: Exception) -> errors.DatastreamError | None:
    if isinstance(exc, errors.DatastreamError):
        return exc
    outage = database_outage(exc)
    if outage is not None:
        return outage
    if isinstance(exc, TooManyFieldsSent):
        # Django refuses more than DATA_UPLOAD_MAX_NUMBER_FIELDS query parameters
        # with an HTML page; repeated ``keys=`` reach that before our own limit.
        return errors.LimitExceeded("too many query parameters; send keys comma-separated")
    if isinstance(exc, drf_errors.ParseError):
        # The README's code for a malformed request body, not DRF's parse_error.
        return errors.InvalidArgument(str(exc.detail))
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """JSON ``{"code", "detail"}`` for domain errors; DRF's handling, in the same shape, for everything else."""
    error = _domain_error(exc)
    if error is not None:
        headers = None
        if isinstance(error, errors.Unauthenticated):
            headers = {"WWW-Authenticate": 'Bearer realm="datastream"'}
        elif isinstance(error, errors.Throttled):
            headers = {"Retry-After": "1"}  # the token bucket refills continuously
        return Response(error_body(error), status=http_status(error), headers=headers)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "code" not in response.data:
        code = getattr(exc, "default_code", "error")
        if "detail" in response.data:
            response.data = {"code": code, "detail": response.data["detail"]}
        else:
            # Serializer field errors: keep them, with a summary naming each field.
            names = ", ".join(sorted(response.data))
            response.data = {
                "code": "invalid_argument",
                "detail": f"malformed request: {names}",
                "fields": response.data,
            }
    return response


@csrf_exempt  # a POST to a wrong path is a 404, not a CSRF failure
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """JSON 404 for any path under /api/ that names no endpoint (trailing-slash variants included)."""
    error = errors.NotFound(f"no such endpoint: {request.path}")
    return JsonResponse(error_body(error), status=http_status(error))
