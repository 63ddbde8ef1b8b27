"""The /events/ API: a brand's business events, stored and relayed to megahub.events."""

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.response import Response

from megahub.filters import DjangoFilterBackendIfAsked, StrictFilterSet
from megahub.pagination import KeysetPagination
from megahub.parsers import StrictJSONParser
from megahub.schema import ErrorSerializer
from task_core import services
from task_core.api.serializers import BrandEventCreatedSerializer, BrandEventSerializer
from task_core.api.tenancy import BrandScopedViewSet
from task_core.models import BRAND_EVENT_SEGMENT, BrandEvent
from task_core.tenancy import Role


class BrandEventFilterSet(StrictFilterSet):
    solution = django_filters.CharFilter(max_length=64)
    model = django_filters.CharFilter(max_length=64)
    action = django_filters.CharFilter(max_length=64)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = BrandEvent
        fields = ["solution", "model", "action", "created_after", "created_before"]


def _segment(name: str) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        {"type": "string", "pattern": f"^{BRAND_EVENT_SEGMENT}$"},
        OpenApiParameter.PATH,
        description="Lowercase letters, digits, '_' or '-' (1 to 64 characters).",
    )


@extend_schema_view(
    list=extend_schema(summary="List the brand's events (keyset-paginated, newest first)"),
    retrieve=extend_schema(summary="Brand event detail"),
)
class BrandEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BrandScopedViewSet):
    queryset = BrandEvent.objects.all()
    serializer_class = BrandEventSerializer
    filterset_class = BrandEventFilterSet
    filter_backends = [DjangoFilterBackendIfAsked]
    pagination_class = KeysetPagination
    parser_classes = [StrictJSONParser]  # an event is a JSON object, nothing else
    not_found_code = "EVENT_NOT_FOUND"
    not_found_detail = "Event not found or access denied"
    action_roles = {"list": Role.VIEWER, "retrieve": Role.VIEWER, "publish": Role.OPERATOR}

    def scope_queryset(self, queryset):
        return queryset.select_related("outbox", "created_by")

    @extend_schema(
        operation_id="events_publish",
        parameters=[_segment("solution"), _segment("model"), _segment("action")],
        request=OpenApiTypes.OBJECT,
        responses={
            201: BrandEventCreatedSerializer,
            413: ErrorSerializer,
        },
        summary="Publish a brand event (stored, then relayed to megahub.events)",
        description=(
            "The JSON object body is the event's `event_data`. Answers the events seed's shape "
            "`{event_uid, event_timestamp, event_data}`; the event goes out on the "
            "`megahub.events` exchange under `brand_event.<brand_id>.<solution>.<model>."
            "<action>` and to the brand's webhooks subscribed to "
            "`brand_event.<solution>.<model>.<action>`."
        ),
    )
    def publish(self, request, solution: str, model: str, action: str):
        event = services.brand_event_create(
            brand=request.brand,
            user=request.user,
            solution=solution,
            model=model,
            action=action,
            event_data=request.data,
        )
        return Response(BrandEventCreatedSerializer(event).data, status=status.HTTP_201_CREATED)
