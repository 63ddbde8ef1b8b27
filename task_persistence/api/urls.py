from rest_framework.routers import DefaultRouter

from task_persistence.api.views import CheckpointViewSet, PersistentJobViewSet

# The seed's paths: /tasks/persistent-jobs/persistent-jobs/ and /tasks/persistent-jobs/checkpoints/;
# /tasks/persistent-jobs/ itself is the app's API root listing both.
router = DefaultRouter(trailing_slash=True)
router.register("persistent-jobs", PersistentJobViewSet, basename="persistent-job")
router.register("checkpoints", CheckpointViewSet, basename="checkpoint")

urlpatterns = router.urls
