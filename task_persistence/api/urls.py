from rest_framework.routers import DefaultRouter

from task_persistence.api.views import CheckpointViewSet, PersistentJobViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("checkpoints", CheckpointViewSet, basename="checkpoint")
router.register("", PersistentJobViewSet, basename="persistent-job")

urlpatterns = router.urls
