"""The project's URLs plus the REST baseline: POST /bench/noop/.

The baseline is the cheapest endpoint that still does everything a brand-scoped write pays
before the view body runs: the same DRF stack, JWT authentication, the same throttles, and the
BrandScopedViewSet permission (HasBrandRole: brand header, membership lookup, action_roles).
GET /bench/noop/ is the same floor for a read (bench/list_pages.py reports it).

/bench/peer/tasks/ is the peer (bench/peers.py): POST a plain DRF create publishing with
delay_on_commit, GET a plain ListAPIView with CursorPagination.
"""

from django.urls import path
from rest_framework.response import Response

from bench import peers
from megahub.urls import handler400, handler403, handler404, handler500  # noqa: F401
from megahub.urls import urlpatterns as project_urlpatterns
from task_core.api.tenancy import BrandScopedViewSet
from task_core.models import Task


class NoopViewSet(BrandScopedViewSet):
    queryset = Task.objects.all()
    action_roles = {"create": "operator", "list": "viewer"}  # as POST and GET /tasks/

    def create(self, request, *args, **kwargs):
        return Response({})

    def list(self, request, *args, **kwargs):
        return Response({})


urlpatterns = [
    path("bench/noop/", NoopViewSet.as_view({"post": "create", "get": "list"}), name="bench-noop"),
    path(
        "bench/peer/tasks/",
        peers.TaskViewSet.as_view({"post": "create", "get": "list"}),
        name="bench-peer-tasks",
    ),
    *project_urlpatterns,
]
