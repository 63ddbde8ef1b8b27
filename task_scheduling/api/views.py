"""The /tasks/scheduled/ API: thin views over task_scheduling's services and selectors."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from megahub.pagination import KeysetPagination
from task_core.api.tenancy import BrandScopedViewSet
from task_core.tenancy import Role
from task_scheduling import selectors, services
from task_scheduling.api.filters import CronJobFilterSet, ScheduleFilterSet, ScheduleRunFilterSet
from task_scheduling.api.serializers import (
    CalendarInputSerializer,
    CalendarSerializer,
    CronJobInputSerializer,
    CronJobSerializer,
    ScheduleInputSerializer,
    ScheduleRunSerializer,
    ScheduleSerializer,
    UpcomingQuerySerializer,
    UpcomingSerializer,
    ValidateCronInputSerializer,
    ValidateCronSerializer,
)
from task_scheduling.models import Calendar, OneOffJob, PeriodicSchedule, ScheduleRun

UPCOMING_PARAMS = [
    OpenApiParameter("from", OpenApiTypes.DATETIME, required=True, description="ISO 8601"),
    OpenApiParameter("to", OpenApiTypes.DATETIME, required=True, description="ISO 8601"),
]
RUNS_PARAMS = [
    OpenApiParameter("outcome", str, many=True, enum=ScheduleRun.Outcome.values),
    OpenApiParameter("fire_time_after", OpenApiTypes.DATETIME),
    OpenApiParameter("fire_time_before", OpenApiTypes.DATETIME),
]


class LedgerPagination(KeysetPagination):
    ordering = "-fire_time"


@extend_schema_view(
    list=extend_schema(summary="List the brand's periodic schedules"),
    retrieve=extend_schema(summary="Schedule detail"),
    destroy=extend_schema(summary="Delete a schedule (its tasks stay)"),
)
class PeriodicScheduleViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BrandScopedViewSet):
    queryset = PeriodicSchedule.objects.all()
    serializer_class = ScheduleSerializer
    not_found_code = "SCHEDULE_NOT_FOUND"
    not_found_detail = "Schedule not found or access denied"
    search_fields = ["name", "task_type", "description"]
    ordering_fields = ["id", "name", "next_run_at"]
    ordering = ["-id"]
    action_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "validate_cron": Role.VIEWER,
        "ready_for_execution": Role.VIEWER,
        "runs": Role.VIEWER,
        "run_now": Role.OPERATOR,
        "create": Role.ADMIN,
        "update": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "destroy": Role.ADMIN,
        "pause": Role.ADMIN,
        "resume": Role.ADMIN,
    }

    @property
    def filterset_class(self):
        if self.action in ("list", "ready_for_execution"):
            return ScheduleFilterSet
        return None

    def scope_queryset(self, queryset):
        queryset = queryset.select_related("last_task", "created_by")
        if self.action == "ready_for_execution":
            queryset = selectors.schedules_ready(queryset=queryset)
        return queryset

    def _input(self, partial: bool) -> dict:
        serializer = ScheduleInputSerializer(
            data=self.request.data, partial=partial, context={"brand": self.request.brand}
        )
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def _out(self, schedule, code=status.HTTP_200_OK):
        return Response(ScheduleSerializer(self.get_queryset().get(pk=schedule.pk)).data, code)

    @extend_schema(
        request=ScheduleInputSerializer,
        responses={201: ScheduleSerializer},
        examples=[
            OpenApiExample(
                "Every working day at 9:00",
                request_only=True,
                value={"cron_expression": "0 9 * * 1-5", "task_type": "daily_seo_report"},
            )
        ],
    )
    def create(self, request):
        schedule = services.schedule_create(
            brand=request.brand, user=request.user, **self._input(partial=False)
        )
        return self._out(schedule, status.HTTP_201_CREATED)

    @extend_schema(request=ScheduleInputSerializer, responses=ScheduleSerializer)
    def update(self, request, pk=None):
        schedule = self.get_object()
        data = self._input(partial=request.method == "PATCH")
        return self._out(services.schedule_update(schedule=schedule, user=request.user, **data))

    @extend_schema(request=ScheduleInputSerializer, responses=ScheduleSerializer)
    def partial_update(self, request, pk=None):
        return self.update(request, pk)

    def destroy(self, request, pk=None):
        services.schedule_delete(schedule=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=ValidateCronInputSerializer,
        responses=ValidateCronSerializer,
        summary="Check a cron expression: description and next runs (zone and UTC, DST flagged)",
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="validate-cron",
        filter_backends=[],
        pagination_class=None,
    )
    def validate_cron(self, request):
        serializer = ValidateCronInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        preview = selectors.cron_preview(
            expression=data["cron_expression"],
            tz_name=data["timezone"],
            count=data["count"],
            after=data.get("after"),
            gap_policy=data["dst_gap_policy"],
        )
        return Response(ValidateCronSerializer(preview).data)

    @extend_schema(
        responses=ScheduleSerializer(many=True),
        summary="Schedules due now (the dispatcher's next work)",
    )
    @action(detail=False, methods=["get"], url_path="ready-for-execution")
    def ready_for_execution(self, request):
        return self.list(request)

    @extend_schema(request=None, responses={201: ScheduleRunSerializer}, summary="Run now")
    @action(detail=True, methods=["post"], url_path="run-now")
    def run_now(self, request, pk=None):
        run = services.schedule_run_now(schedule=self.get_object(), user=request.user)
        return Response(ScheduleRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=ScheduleSerializer, summary="Pause (stop firing)")
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._out(services.schedule_pause(schedule=self.get_object(), user=request.user))

    @extend_schema(request=None, responses=ScheduleSerializer, summary="Resume firing")
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._out(services.schedule_resume(schedule=self.get_object(), user=request.user))

    @extend_schema(
        parameters=RUNS_PARAMS,
        responses=ScheduleRunSerializer(many=True),
        summary="The run ledger, newest fire time first",
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=LedgerPagination)
    def runs(self, request, pk=None):
        schedule = self.get_object()
        filterset = ScheduleRunFilterSet(
            request.query_params, queryset=selectors.schedule_runs(schedule=schedule)
        )
        if not filterset.is_valid():
            raise ValidationError(filterset.errors)
        page = self.paginate_queryset(filterset.qs)
        return self.get_paginated_response(ScheduleRunSerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="List the brand's calendars"),
    retrieve=extend_schema(summary="Calendar detail with its blackout windows"),
    destroy=extend_schema(summary="Delete a calendar (its schedules keep running)"),
)
class CalendarViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BrandScopedViewSet):
    queryset = Calendar.objects.all()
    serializer_class = CalendarSerializer
    not_found_code = "CALENDAR_NOT_FOUND"
    not_found_detail = "Calendar not found or access denied"
    search_fields = ["name"]
    ordering_fields = ["id", "name"]
    ordering = ["-id"]
    action_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "upcoming": Role.VIEWER,
        "upcoming_all": Role.VIEWER,
        "create": Role.ADMIN,
        "update": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "destroy": Role.ADMIN,
    }

    def scope_queryset(self, queryset):
        return queryset.prefetch_related("windows")

    def _input(self, partial: bool) -> dict:
        serializer = CalendarInputSerializer(data=self.request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def _out(self, calendar, code=status.HTTP_200_OK):
        return Response(CalendarSerializer(self.get_queryset().get(pk=calendar.pk)).data, code)

    @extend_schema(request=CalendarInputSerializer, responses={201: CalendarSerializer})
    def create(self, request):
        calendar = services.calendar_create(brand=request.brand, **self._input(partial=False))
        return self._out(calendar, status.HTTP_201_CREATED)

    @extend_schema(request=CalendarInputSerializer, responses=CalendarSerializer)
    def update(self, request, pk=None):
        calendar = self.get_object()
        data = self._input(partial=request.method == "PATCH")
        return self._out(services.calendar_update(calendar=calendar, **data))

    @extend_schema(request=CalendarInputSerializer, responses=CalendarSerializer)
    def partial_update(self, request, pk=None):
        return self.update(request, pk)

    def destroy(self, request, pk=None):
        services.calendar_delete(calendar=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _upcoming(self, request, calendar_id=None):
        query = UpcomingQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        result = selectors.upcoming_runs(
            brand=request.brand,
            start=query.validated_data["from"],
            end=query.validated_data["to"],
            calendar_id=calendar_id,
        )
        return Response(UpcomingSerializer(result).data)

    @extend_schema(
        parameters=UPCOMING_PARAMS,
        responses=UpcomingSerializer,
        summary="Planned runs of the schedules attached to this calendar in [from, to]",
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def upcoming(self, request, pk=None):
        return self._upcoming(request, calendar_id=self.get_object().pk)

    @extend_schema(
        parameters=UPCOMING_PARAMS,
        responses=UpcomingSerializer,
        summary="Planned runs of all the brand's schedules in [from, to]",
        operation_id="tasks_scheduled_calendars_upcoming_all",
    )
    @action(
        detail=False,
        methods=["get"],
        url_path="upcoming",
        filter_backends=[],
        pagination_class=None,
    )
    def upcoming_all(self, request):
        return self._upcoming(request)


@extend_schema_view(
    list=extend_schema(summary="List one-off scheduled jobs"),
    retrieve=extend_schema(summary="One-off job detail"),
)
class CronJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BrandScopedViewSet):
    queryset = OneOffJob.objects.all()
    serializer_class = CronJobSerializer
    filterset_class = CronJobFilterSet
    not_found_code = "CRON_JOB_NOT_FOUND"
    not_found_detail = "Cron job not found or access denied"
    search_fields = ["name", "task_type"]
    ordering_fields = ["id", "run_at"]
    ordering = ["-id"]
    action_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "create": Role.OPERATOR,
        "cancel": Role.OPERATOR,
    }

    def scope_queryset(self, queryset):
        return queryset.select_related("task", "created_by")

    @extend_schema(request=CronJobInputSerializer, responses={201: CronJobSerializer})
    def create(self, request):
        serializer = CronJobInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = services.cron_job_create(
            brand=request.brand, user=request.user, **serializer.validated_data
        )
        data = CronJobSerializer(self.get_queryset().get(pk=job.pk)).data
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=CronJobSerializer, summary="Cancel a job not started")
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = services.cron_job_cancel(job=self.get_object(), user=request.user)
        return Response(CronJobSerializer(self.get_queryset().get(pk=job.pk)).data)
