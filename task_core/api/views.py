"""The /tasks/ API: thin views over task_core's services and selectors."""

from django.db import connections
from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.response import Response

from megahub.pagination import KeysetPagination
from megahub.renderers import JSONRenderer, JSONRows
from task_core import limits, selectors, services, webhooks
from task_core.api.filters import task_filterset
from task_core.api.idempotency import IDEMPOTENCY_HEADER, idempotency_key
from task_core.api.serializers import (
    BrandLimitSerializer,
    QueueStatsSerializer,
    TaskCreateSerializer,
    TaskDetailSerializer,
    TaskEventSerializer,
    TaskListSerializer,
    TaskTypeSerializer,
    WebhookCreatedSerializer,
    WebhookDeliverySerializer,
    WebhookSerializer,
    task_create_input,
    task_detail_data,
)
from task_core.api.tenancy import BrandScopedViewSet
from task_core.models import BrandLimit, Task, Webhook
from task_core.registry import all_task_types
from task_core.tenancy import Role

# The seed's own examples (shared by the docs pages and generated clients).
TASK_CREATE_EXAMPLE = OpenApiExample(
    "SEO keyword analysis",
    request_only=True,
    value={
        "task_type": "seo_keyword_analysis",
        "priority": "normal",
        "description": "Analyser 500 mots-clés",
        "context_data": {"keyword_ids": [1, 2, 3, 4, 5], "analysis_depth": "full"},
    },
)
TASK_DETAIL_EXAMPLE = OpenApiExample(
    "Completed task",
    response_only=True,
    status_codes=["200", "201"],
    value={
        "id": 123, "task_id": "task_abc123def", "task_type": "seo_keyword_analysis",
        "status": "completed", "priority": "normal", "progress_percentage": 100,
        "description": "Analyser 500 mots-clés", "brand": {"id": 9, "name": "Humari"},
        "created_by": {"id": 1, "username": "martin"},
        "created_at": "2024-12-20T14:30:00Z", "started_at": "2024-12-20T14:30:02Z",
        "completed_at": "2024-12-20T15:45:00Z", "attempts": 1, "max_retries": 3,
        "error_message": None, "queue": "default", "scheduled_for": None,
        "cancel_requested": False, "waiting_reason": None,
        "context_data": {"keyword_ids": [1, 2, 3, 4, 5], "analysis_depth": "full"},
        "result_data": {"keywords_processed": 500, "insights_generated": 45},
        "worker": "celery@worker-1", "queued_at": "2024-12-20T14:30:00Z",
        "heartbeat_at": "2024-12-20T15:44:58Z", "updated_at": "2024-12-20T15:45:00Z",
        "metrics": {
            "execution_time_ms": 4500, "cpu_time_ms": 4100, "memory_usage_mb": 128,
            "memory_growth_mb": 3.5, "cost_usd": 0.034, "queue_wait_ms": 12,
            "worker": "celery@worker-1", "attempt": 1, "status": "completed",
            "recorded_at": "2024-12-20T15:45:00Z",
        },
        "persistent_job": None,
    },
)  # fmt: skip


class TimelinePagination(KeysetPagination):
    ordering = "id"  # oldest first: a timeline reads top to bottom


@extend_schema_view(
    list=extend_schema(summary="List the brand's tasks (keyset-paginated)"),
    retrieve=extend_schema(summary="Task detail", examples=[TASK_DETAIL_EXAMPLE]),
)
class TaskViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, BrandScopedViewSet
):
    queryset = Task.objects.all()
    not_found_code = "TASK_NOT_FOUND"
    not_found_detail = "Task not found or access denied"
    search_fields = ["task_type", "description", "=task_id"]
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]  # DRF's, the rows spliced in
    ordering_fields = ["id", "created_at"]
    ordering = ["-id"]
    action_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "events": Role.VIEWER,
        "queue_stats": Role.VIEWER,
        "types": Role.VIEWER,
        "create": Role.OPERATOR,
        "retry": Role.OPERATOR,
        "cancel": Role.OPERATOR,
    }

    @property
    def filterset_class(self):
        return task_filterset() if self.action == "list" else None

    def scope_queryset(self, queryset):
        if self.action == "list":
            return queryset  # list() reads plain rows (selectors.task_list_rows)
        return queryset.select_related("brand", "created_by")

    def list(self, request, *args, **kwargs):
        # Same response as ListModelMixin with TaskListSerializer (the documented shape), each
        # row built as JSON by PostgreSQL: model instances and serializers were most of a page.
        if selectors.task_list_is_plain(request.query_params):
            # The brand's tasks by id, nothing filtered: one kept statement, bound to the brand
            # the permission resolved (as get_queryset scopes it), no ORM query per request.
            rows = selectors.TaskListStatement(request.brand.pk)
        else:
            rows = selectors.task_list_rows(self.filter_queryset(self.get_queryset()))
        page = self.paginate_queryset(rows)
        # The rows' JSON texts go into the response bytes as they are (megahub.renderers).
        verbatim = connections[rows.db].vendor == "postgresql"  # SQLite's json_object: decoded
        return self.get_paginated_response(
            JSONRows([row["row"] for row in page], verbatim=verbatim)
        )

    def get_serializer_class(self):
        if self.action == "create":
            return TaskCreateSerializer
        if self.action == "list":
            return TaskListSerializer
        return TaskDetailSerializer

    @extend_schema(
        request=TaskCreateSerializer,
        responses={201: TaskDetailSerializer, 200: TaskDetailSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        examples=[TASK_CREATE_EXAMPLE, TASK_DETAIL_EXAMPLE],
        summary="Create a task (201), or return the idempotent twin (200)",
    )
    def create(self, request, *args, **kwargs):
        fields = task_create_input(request.data)
        task, created = services.task_create(
            brand=request.brand,
            user=request.user,
            idempotency_key=idempotency_key(request),
            **fields,
        )
        # `task` carries its brand, creator and status (`queued` in the create's transaction,
        # `pending` again if its send failed after the commit).
        return Response(
            task_detail_data(task, never_run=created),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        request=None, responses=TaskDetailSerializer, summary="Retry a failed/cancelled task"
    )
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        task = services.task_retry(task=self.get_object(), user=request.user)
        return Response(TaskDetailSerializer(self.get_queryset().get(pk=task.pk)).data)

    @extend_schema(
        request=None,
        responses={200: TaskDetailSerializer, 202: TaskDetailSerializer},
        summary="Cancel a task (202 while a running task is asked to stop)",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        task = services.task_cancel(task=self.get_object(), user=request.user)
        code = (
            status.HTTP_202_ACCEPTED if task.status == Task.Status.RUNNING else status.HTTP_200_OK
        )
        return Response(TaskDetailSerializer(self.get_queryset().get(pk=task.pk)).data, status=code)

    @extend_schema(responses=TaskEventSerializer(many=True), summary="The task's timeline")
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=TimelinePagination)
    def events(self, request, pk=None):
        events = selectors.task_events(task=self.get_object())
        page = self.paginate_queryset(events)
        return self.get_paginated_response(TaskEventSerializer(page, many=True).data)

    @extend_schema(responses=QueueStatsSerializer, summary="Queue statistics (database + broker)")
    @action(
        detail=False,
        methods=["get"],
        url_path="queue-stats",
        filter_backends=[],
        pagination_class=None,
    )
    def queue_stats(self, request):
        fleet = request.user.is_staff or request.user.is_superuser
        stats = selectors.queue_stats(brand=request.brand, fleet=fleet)
        return Response(QueueStatsSerializer(stats).data)

    @extend_schema(responses=TaskTypeSerializer(many=True), summary="Registered task types")
    @action(detail=False, methods=["get"], filter_backends=[], pagination_class=None)
    def types(self, request):
        return Response([t.as_dict() for t in all_task_types()])


class WebhookViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    BrandScopedViewSet,
):
    """The brand's webhooks (admin role): lifecycle events POSTed, signed, to a URL."""

    queryset = Webhook.objects.all()
    serializer_class = WebhookSerializer
    not_found_code = "WEBHOOK_NOT_FOUND"
    not_found_detail = "Webhook not found or access denied"
    filter_backends = []
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_roles = {
        action: Role.ADMIN
        for action in ("list", "retrieve", "create", "partial_update", "destroy", "deliveries")
    }

    @extend_schema(
        responses={201: WebhookCreatedSerializer}, summary="Subscribe a URL (secret shown once)"
    )
    def create(self, request, *args, **kwargs):
        serializer = WebhookSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        webhook = webhooks.webhook_save(
            webhook=Webhook(brand=request.brand), **serializer.validated_data
        )
        return Response(WebhookCreatedSerializer(webhook).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, *args, **kwargs):
        serializer = WebhookSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        webhook = webhooks.webhook_save(webhook=self.get_object(), **serializer.validated_data)
        return Response(WebhookSerializer(webhook).data)

    @extend_schema(responses=WebhookDeliverySerializer(many=True), summary="Delivery attempts")
    @action(detail=True, methods=["get"], pagination_class=KeysetPagination)
    def deliveries(self, request, pk=None):
        # The webhook was read through the brand's queryset; its deliveries are its own.
        page = self.paginate_queryset(self.get_object().deliveries.order_by("-id"))
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="The brand's limits (fair share and per-brand limits)"),
    create=extend_schema(summary="Add a limit (brand-wide, or for one task type)"),
    partial_update=extend_schema(summary="Change a limit"),
    destroy=extend_schema(summary="Remove a limit (its waiting work is released)"),
)
class BrandLimitViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    BrandScopedViewSet,
):
    """The brand's limits at release: max_running, rate_per_minute, weight. Viewers read them,
    admins write them; work over a limit waits (waiting_reason), it is never refused."""

    queryset = BrandLimit.objects.all()
    serializer_class = BrandLimitSerializer
    not_found_code = "LIMIT_NOT_FOUND"
    not_found_detail = "Limit not found or access denied"
    filter_backends = []
    pagination_class = None  # a brand has one row per task type at most
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "create": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "destroy": Role.ADMIN,
    }

    def create(self, request, *args, **kwargs):
        serializer = BrandLimitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        limit = limits.brand_limit_save(
            limit=BrandLimit(brand=request.brand), **serializer.validated_data
        )
        return Response(BrandLimitSerializer(limit).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, *args, **kwargs):
        limit = self.get_object()
        serializer = BrandLimitSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        limit = limits.brand_limit_save(limit=limit, **serializer.validated_data)
        return Response(BrandLimitSerializer(limit).data)

    def perform_destroy(self, instance):
        limits.brand_limit_delete(limit=instance)
