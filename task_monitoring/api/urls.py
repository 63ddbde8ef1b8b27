from rest_framework.routers import DefaultRouter

from task_monitoring.api.views import AlertRuleViewSet, AlertViewSet, MetricViewSet, WorkerViewSet

router = DefaultRouter(trailing_slash=True)
# /tasks/monitoring/ itself is the app's API root listing these resources.
router.register("metrics", MetricViewSet, basename="metric")
router.register("workers", WorkerViewSet, basename="worker")
router.register("alert-rules", AlertRuleViewSet, basename="alert-rule")
router.register("alerts", AlertViewSet, basename="alert")

urlpatterns = router.urls
