from django.core.management.base import BaseCommand, CommandError

from task_monitoring import services
from task_monitoring.models import AlertRule


class Command(BaseCommand):
    help = "Evaluate alert rules now (all enabled rules, or the given rule ids), as beat does."

    def add_arguments(self, parser):
        parser.add_argument("rule_ids", nargs="*", type=int, help="only these rules (ids)")

    def handle(self, *args, rule_ids, **options):
        if not rule_ids:
            outcomes = services.alert_rules_evaluate()
            self.stdout.write(f"evaluated: {outcomes or 'no enabled rule'}")
            return
        rules = {r.pk: r for r in AlertRule.objects.unscoped().filter(pk__in=rule_ids)}
        missing = sorted(set(rule_ids) - set(rules))
        if missing:
            raise CommandError(f"no alert rule with id {', '.join(map(str, missing))}")
        for pk in rule_ids:
            outcome = services.alert_rule_evaluate(rule=rules[pk])
            self.stdout.write(f"rule {pk} ({rules[pk].name}): {outcome}")
