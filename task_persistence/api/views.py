"""The /tasks/persistent-jobs/ API: thin views over task_persistence's services and selectors."""

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from megahub.pagination import KeysetPagination
from task_core.api.idempotency import IDEMPOTENCY_HEADER, idempotency_key
from task_core.api.tenancy import BrandScopedViewSet
from task_core.models import Task
from task_core.tenancy import Role
from task_persistence import selectors, services
from task_persistence.api.filters import CheckpointFilterSet, JobFilterSet
from task_persistence.api.serializers import (
    CheckpointSerializer,
    JobCreateSerializer,
    JobDetailSerializer,
    JobListSerializer,
)
from task_persistence.models import Checkpoint, PersistentJob


@extend_schema_view(
    list=extend_schema(summary="List the brand's persistent jobs"),
    retrieve=extend_schema(summary="Persistent job detail"),
)
class PersistentJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BrandScopedViewSet):
    queryset = PersistentJob.objects.all()
    not_found_code = "JOB_NOT_FOUND"
    not_found_detail = "Job not found or access denied"
    filterset_class = JobFilterSet
    search_fields = ["task__task_type", "task__description", "=task__task_id"]
    ordering_fields = ["id", "created_at"]
    ordering = ["-id"]
    action_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "resumable": Role.VIEWER,
        "create": Role.OPERATOR,
        "resume": Role.OPERATOR,
        "pause": Role.OPERATOR,
        "cancel": Role.OPERATOR,
    }

    def scope_queryset(self, queryset):
        queryset = queryset.select_related("task").with_position()
        if self.action in ("list", "resumable"):
            queryset = queryset.defer("initial_state", "task__context_data", "task__result_data")
        return queryset

    def get_serializer_class(self):
        if self.action == "create":
            return JobCreateSerializer
        if self.action in ("list", "resumable"):
            return JobListSerializer
        return JobDetailSerializer

    def _detail(self, job, code=status.HTTP_200_OK):
        return Response(JobDetailSerializer(self.get_queryset().get(pk=job.pk)).data, status=code)

    @extend_schema(
        request=JobCreateSerializer,
        responses={201: JobDetailSerializer, 200: JobDetailSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        examples=[
            OpenApiExample(
                "Keyword audit, checkpoint every 100 keywords",
                request_only=True,
                value={
                    "task_type": "seo_keyword_audit",
                    "context_data": {"keyword_ids": [1, 2, 3]},
                    "checkpoint_every_items": 100,
                    "auto_resume_max": 3,
                },
            )
        ],
        summary="Create a resumable task and its job",
    )
    def create(self, request, *args, **kwargs):
        serializer = JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job, created = services.job_create(
            brand=request.brand,
            user=request.user,
            idempotency_key=idempotency_key(request),
            **serializer.validated_data,
        )
        return self._detail(job, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        responses=JobListSerializer(many=True),
        summary="Jobs that can be resumed: paused, interrupted, or failed with a checkpoint",
    )
    @action(detail=False, methods=["get"])
    def resumable(self, request):
        jobs = selectors.jobs_resumable(queryset=self.filter_queryset(self.get_queryset()))
        page = self.paginate_queryset(jobs)
        return self.get_paginated_response(JobListSerializer(page, many=True).data)

    @extend_schema(request=None, responses=JobDetailSerializer, summary="Resume from checkpoint")
    @action(detail=True, methods=["post"], filter_backends=[])
    def resume(self, request, pk=None):
        return self._detail(services.job_resume(job=self.get_object(), user=request.user))

    @extend_schema(
        request=None,
        responses={202: JobDetailSerializer},
        summary="Pause at the next checkpoint (202: requested)",
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def pause(self, request, pk=None):
        job = services.job_pause(job=self.get_object(), user=request.user)
        return self._detail(job, status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=None,
        responses={200: JobDetailSerializer, 202: JobDetailSerializer},
        summary="Cancel the job (202 while a running job is asked to stop)",
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def cancel(self, request, pk=None):
        job = services.job_cancel(job=self.get_object(), user=request.user)
        running = job.task.status == Task.Status.RUNNING
        return self._detail(job, status.HTTP_202_ACCEPTED if running else status.HTTP_200_OK)


@extend_schema_view(
    list=extend_schema(summary="Checkpoints (filter by job: its checkpoint timeline)"),
    retrieve=extend_schema(summary="Checkpoint detail"),
)
class CheckpointViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, BrandScopedViewSet):
    queryset = Checkpoint.objects.all()
    serializer_class = CheckpointSerializer
    pagination_class = KeysetPagination
    not_found_code = "CHECKPOINT_NOT_FOUND"
    not_found_detail = "Checkpoint not found or access denied"
    filterset_class = CheckpointFilterSet
    ordering_fields = ["id"]
    ordering = ["-id"]
    action_roles = {"list": Role.VIEWER, "retrieve": Role.VIEWER}
