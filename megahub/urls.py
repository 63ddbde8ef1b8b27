from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularJSONAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView, TokenVerifyView

from megahub.schema import self_contained
from task_monitoring import dashboard, health, prometheus

urlpatterns = [
    path("auth/token/", TokenObtainPairView.as_view(), name="token_obtain_pair"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
    path("auth/token/verify/", TokenVerifyView.as_view(), name="token_verify"),
    # Probes answer with and without the trailing slash: a probe need not follow a redirect.
    re_path(r"^health/?$", health.liveness, name="health"),
    re_path(r"^health/ready/?$", health.readiness, name="health-ready"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="schema"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema-alias"),
    path(
        "docs/",
        self_contained(SpectacularSwaggerView.as_view(url_name="schema")),
        name="swagger-ui",
    ),
    path("redoc/", self_contained(SpectacularRedocView.as_view(url_name="schema")), name="redoc"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    # Before "tasks/": the app's routes live under the task hub's prefix.
    path("tasks/persistent-jobs/", include("task_persistence.api.urls")),
    path("metrics", prometheus.metrics_view, name="prometheus-metrics"),
    path("dashboard/", dashboard.dashboard_view, name="ops-dashboard"),
    path("tasks/monitoring/", include("task_monitoring.api.urls")),
    # Before "tasks/": the task routes would otherwise claim "tasks/scheduled/...".
    path("tasks/scheduled/", include("task_scheduling.api.urls")),
    path("tasks/", include("task_core.api.urls")),
    path("events/", include("task_core.api.event_urls")),  # brand events
]

handler400 = "megahub.errors.handler400"
handler403 = "megahub.errors.handler403"
handler404 = "megahub.errors.handler404"
handler500 = "megahub.errors.handler500"
