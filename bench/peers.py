"""The peers of megahub's /tasks/ API: what a Django team would write instead, plainly.

- ``POST /bench/peer/tasks/``: a DRF ``ModelViewSet``-style create (``ModelSerializer``)
  that publishes the Celery task with ``delay_on_commit`` (bench/peer_celery.py);
- ``GET /bench/peer/tasks/``: a ``ListAPIView`` with a ``ModelSerializer`` (brand and
  creator nested) and ``CursorPagination``, over the same rows as GET /tasks/.

Same JWT authentication as megahub (simplejwt, megahub's SIMPLE_JWT settings), the same
brand-membership rule (X-Brand-ID names a brand the user is a member of; writes need more than
viewer), the same throttles (DRF defaults from megahub's settings). The cursor orders by id,
the index megahub's list walks too (``task_brand_id_idx``).
"""

from django.contrib.auth import get_user_model
from rest_framework import mixins, permissions, serializers, viewsets
from rest_framework.pagination import CursorPagination
from rest_framework_simplejwt.authentication import JWTAuthentication

from bench.peer_celery import peer_noop
from task_core.models import Brand, BrandMembership, Task
from task_core.selectors import TASK_LIST_FIELDS


class IsBrandMember(permissions.BasePermission):
    """Member of the brand in X-Brand-ID; viewers may only read."""

    def has_permission(self, request, view):
        brand_id = request.headers.get("X-Brand-ID", "")
        if not brand_id.isdigit():
            return False
        membership = (
            BrandMembership.objects.select_related("brand")
            .filter(user=request.user, brand_id=brand_id, brand__is_active=True)
            .first()
        )
        if membership is None:
            return False
        if request.method not in permissions.SAFE_METHODS and membership.role == "viewer":
            return False
        request.brand = membership.brand
        return True


class BrandSerializer(serializers.ModelSerializer):
    class Meta:
        model = Brand
        fields = ["id", "name"]


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username"]


class TaskSerializer(serializers.ModelSerializer):
    brand = BrandSerializer(read_only=True)
    created_by = UserSerializer(read_only=True)

    class Meta:
        model = Task
        fields = [*TASK_LIST_FIELDS, "context_data"]
        read_only_fields = [
            f for f in fields if f not in ("task_type", "priority", "description", "context_data")
        ]
        extra_kwargs = {"context_data": {"write_only": True}}  # the list shows what /tasks/ does


class TaskCursorPagination(CursorPagination):
    ordering = "-id"
    page_size = 50


class TaskViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    authentication_classes = [JWTAuthentication]
    permission_classes = [permissions.IsAuthenticated, IsBrandMember]
    serializer_class = TaskSerializer
    pagination_class = TaskCursorPagination
    filter_backends = []

    def get_queryset(self):
        return Task.objects.filter(brand=self.request.brand).select_related("brand", "created_by")

    def perform_create(self, serializer):
        task = serializer.save(brand=self.request.brand, created_by=self.request.user)
        peer_noop.delay_on_commit(task.pk)
