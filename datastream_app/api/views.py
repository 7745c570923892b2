"""REST views: parse the request, call one service function, shape the response."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from datastream_app import services
from datastream_app.api.auth import actor_name, request_principal
from datastream_app.api.parsers import JSONParser, json_body
from datastream_app.api.serializers import (
    CapabilitiesSerializer,
    EntrySerializer,
    ErrorSerializer,
    PushSerializer,
    SyncResponseSerializer,
    entry_json,
)
from datastream_app.audit import Interface, acting


class CapabilitiesView(APIView):
    """Every key with its value type."""

    @extend_schema(responses={200: CapabilitiesSerializer, 401: ErrorSerializer, 403: ErrorSerializer})
    def get(self, request: Request) -> Response:
        """List capabilities."""
        capabilities = services.list_capabilities(principal=request_principal(request))
        return Response({"capabilities": [{"key": c.key, "value_type": c.value_type} for c in capabilities]})


class SyncView(APIView):
    """Current values of the requested keys (none: all keys)."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "keys",
                OpenApiTypes.STR,
                many=True,
                description="Keys, comma-separated and/or repeated; none means every key.",
            )
        ],
        responses={
            200: SyncResponseSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
            413: ErrorSerializer,
        },
    )
    def get(self, request: Request) -> Response:
        """Sync values."""
        keys = [key for param in request.query_params.getlist("keys") for key in param.split(",") if key]
        entries = services.get_entries(keys=keys, principal=request_principal(request))
        return Response({"data": {key: entry_json(entry) for key, entry in entries.items()}})


class PushView(APIView):
    """Set one key, validated exactly as the admin and gRPC validate it."""

    parser_classes = [JSONParser]

    @extend_schema(
        request=PushSerializer,
        responses={
            200: EntrySerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
            413: ErrorSerializer,
            415: ErrorSerializer,
            429: ErrorSerializer,
            503: ErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        """Push an update."""
        # Read here rather than through request.data: DRF sees a chunked body as empty.
        serializer = PushSerializer(data=json_body(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        principal = request_principal(request)
        with acting(actor_name(request, principal), Interface.REST):
            entry = services.push_json(
                key=data["key"], value=data["value"], value_type=data["value_type"], principal=principal
            )
        return Response(entry_json(entry))
