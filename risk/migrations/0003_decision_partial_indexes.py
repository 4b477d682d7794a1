import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """The outcome and rule indexes of risk_decision hold only the decisions that do not allow / that name
    a rule. The rule field's index is dropped by hand: Django's AlterField would also drop and re-add the
    foreign key, validating every row of a table that grows with each checkout."""

    dependencies = [
        ("risk", "0002_default_rules"),
    ]

    operations = [
        migrations.AlterField(
            model_name="decision",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("allow", "Allow"),
                    ("challenge", "Challenge (captcha or second factor)"),
                    ("review", "Hold for staff review"),
                    ("block", "Block"),
                    ("freeze", "Block and freeze the account"),
                ],
                max_length=16,
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="decision",
                    name="rule",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="decisions",
                        to="risk.rule",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    'DROP INDEX IF EXISTS "risk_decision_rule_id_1c61e9ae"',
                    reverse_sql='CREATE INDEX "risk_decision_rule_id_1c61e9ae" ON "risk_decision" ("rule_id")',
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="decision",
            index=models.Index(
                condition=models.Q(("outcome", "allow"), _negated=True),
                fields=["outcome"],
                name="risk_decision_not_allowed",
            ),
        ),
        migrations.AddIndex(
            model_name="decision",
            index=models.Index(condition=models.Q(("rule__isnull", False)), fields=["rule"], name="risk_decision_rule"),
        ),
    ]
