from rest_framework.routers import DefaultRouter

from task_core.api.views import BrandLimitViewSet, TaskViewSet, WebhookViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("webhooks", WebhookViewSet, basename="webhook")
router.register("limits", BrandLimitViewSet, basename="brand-limit")
router.register("", TaskViewSet, basename="task")

urlpatterns = router.urls
