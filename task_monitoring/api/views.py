"""The /tasks/monitoring/ API: thin views over task_monitoring's services and selectors."""

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from megahub.pagination import KeysetPagination
from task_core.api.tenancy import BrandScopedViewSet
from task_core.tenancy import Role
from task_monitoring import selectors, services
from task_monitoring.api.filters import AlertFilterSet, AlertRuleFilterSet, MetricFilterSet
from task_monitoring.api.serializers import (
    AlertEvaluationSerializer,
    AlertNotificationSerializer,
    AlertRuleInputSerializer,
    AlertRuleSerializer,
    AlertSerializer,
    DashboardQuerySerializer,
    DashboardSerializer,
    MetricSerializer,
    WorkerSerializer,
    WorkersOverviewSerializer,
)
from task_monitoring.models import (
    Alert,
    AlertEvaluation,
    AlertNotification,
    AlertRule,
    TaskMetric,
    Worker,
)


@extend_schema_view(
    list=extend_schema(summary="Metrics rows, one per execution attempt (keyset-paginated)"),
    retrieve=extend_schema(summary="One metrics row"),
)
class MetricViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BrandScopedViewSet):
    queryset = TaskMetric.objects.all()
    serializer_class = MetricSerializer
    filterset_class = MetricFilterSet
    not_found_code = "METRIC_NOT_FOUND"
    not_found_detail = "Metric not found or access denied"
    search_fields = [
        "task_type", "worker_hostname", "status", "=task__task_id", "task__description",
    ]  # fmt: skip
    ordering_fields = [
        "id", "created_at", "execution_time_ms", "cpu_time_ms", "memory_usage_mb", "cost_usd",
        "queue_wait_ms",
    ]  # fmt: skip
    ordering = ["-id"]
    action_roles = {"list": Role.VIEWER, "retrieve": Role.VIEWER, "dashboard": Role.VIEWER}

    def scope_queryset(self, queryset):
        return queryset.select_related("task").defer(
            "task__context_data", "task__result_data", "task__description"
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("window", str, enum=list(selectors.WINDOWS), default="24h"),
        ],
        responses=DashboardSerializer,
        summary="Brand dashboard over a window (1h, 24h, 7d, 30d)",
    )
    @action(detail=False, methods=["get"], filter_backends=[], pagination_class=None)
    def dashboard(self, request):
        params = {k: v for k, v in request.query_params.items() if k == "window"}
        query = DashboardQuerySerializer(data=params)
        query.is_valid(raise_exception=True)
        data = selectors.dashboard(brand=request.brand, window=query.validated_data["window"])
        return Response(DashboardSerializer(data).data)


class WorkerPagination(KeysetPagination):
    ordering = "hostname"


@extend_schema_view(
    list=extend_schema(summary="Every Celery worker seen, online or not (the shared fleet)"),
    retrieve=extend_schema(summary="One worker"),
)
class WorkerViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BrandScopedViewSet):
    # Workers belong to no brand: the fleet is shared infrastructure and carries no brand data
    # (hostnames, queues, load), so any member of the named brand reads it whole.
    brand_owned = False
    queryset = Worker.objects.all()
    serializer_class = WorkerSerializer
    pagination_class = WorkerPagination
    not_found_code = "WORKER_NOT_FOUND"
    not_found_detail = "Worker not found"
    search_fields = ["hostname"]
    ordering_fields = ["hostname", "last_heartbeat_at"]
    ordering = ["hostname"]
    action_roles = {"list": Role.VIEWER, "retrieve": Role.VIEWER, "overview": Role.VIEWER}

    @extend_schema(
        responses=WorkersOverviewSerializer, summary="Fleet counts and per-queue consumers"
    )
    @action(detail=False, methods=["get"], filter_backends=[], pagination_class=None)
    def overview(self, request):
        return Response(WorkersOverviewSerializer(selectors.workers_overview()).data)


class EvaluationPagination(KeysetPagination):
    ordering = "-id"


@extend_schema_view(
    list=extend_schema(summary="The brand's alert rules (admin)"),
    retrieve=extend_schema(summary="One alert rule"),
    create=extend_schema(request=AlertRuleInputSerializer, responses={201: AlertRuleSerializer}),
    update=extend_schema(request=AlertRuleInputSerializer, responses=AlertRuleSerializer),
    partial_update=extend_schema(request=AlertRuleInputSerializer, responses=AlertRuleSerializer),
)
class AlertRuleViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    BrandScopedViewSet,
):
    queryset = AlertRule.objects.all()
    serializer_class = AlertRuleSerializer
    filterset_class = AlertRuleFilterSet
    not_found_code = "ALERT_RULE_NOT_FOUND"
    not_found_detail = "Alert rule not found or access denied"
    search_fields = ["name", "task_type", "metric"]
    ordering_fields = ["id", "name", "created_at"]
    ordering = ["-id"]
    action_roles = {
        "list": Role.ADMIN,
        "retrieve": Role.ADMIN,
        "create": Role.ADMIN,
        "update": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "destroy": Role.ADMIN,
        "evaluations": Role.ADMIN,
        "evaluate": Role.ADMIN,
    }

    def get_serializer_class(self):
        if self.action in ("create", "update", "partial_update"):
            return AlertRuleInputSerializer
        return AlertRuleSerializer

    def create(self, request, *args, **kwargs):
        serializer = AlertRuleInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rule = services.alert_rule_save(
            rule=AlertRule(brand=request.brand), user=request.user, **serializer.validated_data
        )
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        rule = self.get_object()
        partial = kwargs.pop("partial", False)
        serializer = AlertRuleInputSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        rule = services.alert_rule_save(rule=rule, **serializer.validated_data)
        return Response(AlertRuleSerializer(rule).data)

    @extend_schema(responses=AlertEvaluationSerializer(many=True), summary="The rule's evaluations")
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=EvaluationPagination)
    def evaluations(self, request, pk=None):
        rows = AlertEvaluation.objects.unscoped().filter(rule=self.get_object()).order_by("-id")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(AlertEvaluationSerializer(page, many=True).data)

    @extend_schema(request=None, responses=AlertEvaluationSerializer, summary="Evaluate now")
    @action(detail=True, methods=["post"])
    def evaluate(self, request, pk=None):
        rule = self.get_object()
        services.alert_rule_evaluate(rule=rule)
        latest = AlertEvaluation.objects.unscoped().filter(rule=rule).order_by("-id").first()
        return Response(AlertEvaluationSerializer(latest).data)


@extend_schema_view(
    list=extend_schema(
        summary="Active (firing) alerts; ?status= selects acknowledged or resolved ones"
    ),
    retrieve=extend_schema(summary="One alert"),
)
class AlertViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BrandScopedViewSet):
    queryset = Alert.objects.all()
    serializer_class = AlertSerializer
    filterset_class = AlertFilterSet
    not_found_code = "ALERT_NOT_FOUND"
    not_found_detail = "Alert not found or access denied"
    search_fields = ["message", "rule__name"]
    ordering_fields = ["id", "fired_at"]
    ordering = ["-id"]
    action_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "notifications": Role.VIEWER,
        "acknowledge": Role.OPERATOR,
        "resolve": Role.OPERATOR,
    }

    def scope_queryset(self, queryset):
        queryset = queryset.select_related("rule", "acknowledged_by", "resolved_by")
        # The seed's "alertes actives": a list that names no status shows the firing ones.
        if self.action == "list" and "status" not in self.request.query_params:
            queryset = queryset.filter(status=Alert.Status.FIRING)
        return queryset

    @extend_schema(request=None, responses=AlertSerializer, summary="Acknowledge a firing alert")
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        alert = services.alert_acknowledge(alert=self.get_object(), user=request.user)
        return Response(AlertSerializer(self.get_queryset().get(pk=alert.pk)).data)

    @extend_schema(request=None, responses=AlertSerializer, summary="Resolve an open alert")
    @action(detail=True, methods=["post"])
    def resolve(self, request, pk=None):
        alert = services.alert_resolve(alert=self.get_object(), user=request.user)
        return Response(AlertSerializer(self.get_queryset().get(pk=alert.pk)).data)

    @extend_schema(
        responses=AlertNotificationSerializer(many=True),
        summary="The alert's notifications and every delivery attempt",
        description="`target` (webhook URL or e-mail addresses) is shown to the brand's admins "
        "only; for other roles it is null and redacted from error messages.",
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def notifications(self, request, pk=None):
        rows = (
            AlertNotification.objects.unscoped()
            .filter(alert=self.get_object())
            .prefetch_related("attempt_log")
            .order_by("id")
        )
        show_target = Role.allows(request.membership.role, "admin")
        return Response(
            AlertNotificationSerializer(rows, many=True, context={"show_target": show_target}).data
        )
