from rest_framework.routers import DefaultRouter

from task_scheduling.api.views import CalendarViewSet, CronJobViewSet, PeriodicScheduleViewSet

# /tasks/scheduled/ itself is the app's API root listing these resources.
router = DefaultRouter(trailing_slash=True)
router.register("periodic-tasks", PeriodicScheduleViewSet, basename="periodic-task")
router.register("cron-jobs", CronJobViewSet, basename="cron-job")
router.register("calendars", CalendarViewSet, basename="calendar")

urlpatterns = router.urls
