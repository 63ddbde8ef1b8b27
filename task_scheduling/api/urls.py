from rest_framework.routers import SimpleRouter

from task_scheduling.api.views import CalendarViewSet, CronJobViewSet, PeriodicScheduleViewSet

router = SimpleRouter()
router.register("periodic-tasks", PeriodicScheduleViewSet, basename="periodic-task")
router.register("cron-jobs", CronJobViewSet, basename="cron-job")
router.register("calendars", CalendarViewSet, basename="calendar")

urlpatterns = router.urls
