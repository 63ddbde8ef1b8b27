from django.urls import path

from task_core.api.event_views import BrandEventViewSet

urlpatterns = [
    path("", BrandEventViewSet.as_view({"get": "list"}), name="brand-event-list"),
    path("<int:pk>/", BrandEventViewSet.as_view({"get": "retrieve"}), name="brand-event-detail"),
    path(
        "<str:solution>/<str:model>/<str:action>/",
        BrandEventViewSet.as_view({"post": "publish"}),
        name="brand-event-publish",
    ),
]
