from rest_framework.routers import DefaultRouter

from task_core.api.views import TaskViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("", TaskViewSet, basename="task")

urlpatterns = router.urls
