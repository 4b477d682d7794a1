from django.db import migrations


# (event, signal, comparison, threshold, outcome, description). Each rule counts one buyer, e-mail,
# device, address or network, never the whole shop, so a busy day is not mistaken for an attack.
DEFAULT_RULES = [
    # checkout: card testing (many e-mails, failing payments, one device or address)
    (
        "checkout",
        "count.payment_failed.device.1h",
        "gte",
        5,
        "block",
        "Five or more payments from this device failed within an hour: card testing.",
    ),
    (
        "checkout",
        "count.payment_failed.ip.1h",
        "gte",
        8,
        "block",
        "Eight or more payments from this address failed within an hour: card testing.",
    ),
    (
        "checkout",
        "keys.checkout.email.1h",
        "gt",
        100,
        "review",
        "This e-mail address took more than 100 keys within an hour: hold the order for staff.",
    ),
    (
        "checkout",
        "keys.checkout.account.1h",
        "gt",
        100,
        "review",
        "This account took more than 100 keys within an hour: hold the order for staff.",
    ),
    (
        "checkout",
        "emails.device.1d",
        "gte",
        4,
        "challenge",
        "Four or more e-mail addresses checked out from this device within a day.",
    ),
    (
        "checkout",
        "emails.ip.1h",
        "gte",
        10,
        "challenge",
        "Ten or more e-mail addresses checked out from this address within an hour.",
    ),
    (
        "checkout",
        "count.checkout.device.10m",
        "gte",
        10,
        "challenge",
        "Ten or more checkouts from this device within ten minutes.",
    ),
    (
        "checkout",
        "count.checkout.ip.10m",
        "gte",
        30,
        "challenge",
        "Thirty or more checkouts from this address within ten minutes.",
    ),
    (
        "checkout",
        "count.payment_failed.device.1h",
        "gte",
        3,
        "challenge",
        "Three payments from this device failed within an hour.",
    ),
    (
        "checkout",
        "anomaly_score",
        "gte",
        80,
        "challenge",
        "Very unlike this buyer's own history (amount, hour, network, burst).",
    ),
    # sign-up: account farming from one address, network or device
    ("signup", "count.signup.ip.1h", "gte", 50, "block", "Fifty or more sign-ups from this address within an hour."),
    ("signup", "count.signup.ip.1h", "gte", 10, "challenge", "Ten or more sign-ups from this address within an hour."),
    (
        "signup",
        "count.signup.network.1h",
        "gte",
        20,
        "challenge",
        "Twenty or more sign-ups from this network within an hour.",
    ),
    (
        "signup",
        "count.signup.device.1d",
        "gte",
        3,
        "challenge",
        "Three or more sign-ups from this device within a day.",
    ),
    # sign-in
    (
        "login",
        "emails.device.1d",
        "gte",
        6,
        "challenge",
        "Six or more accounts signed in from this device within a day.",
    ),
    # payment confirmed: keep what the checkout held
    ("payment", "subject_flagged", "gte", 1, "review", "The checkout of this order was held for review."),
    # disputes: buyers who reveal keys and then call them dead; merchants who sell used stock
    (
        "dispute",
        "count.dispute_revealed.email.30d",
        "gte",
        3,
        "review",
        "This buyer disputed three or more orders in 30 days whose keys they had revealed.",
    ),
    ("dispute", "count.dispute.email.30d", "gte", 5, "review", "This buyer opened five or more disputes in 30 days."),
    (
        "dispute",
        "merchant_used_dispute_rate",
        "gte",
        30,
        "review",
        "30 % or more of the merchant's orders in 30 days were disputed as already used.",
    ),
    # money out: account takeover
    ("withdrawal", "new_device", "gte", 1, "review", "Withdrawing from a device first used within the last day."),
    ("withdrawal", "new_network", "gte", 1, "review", "Withdrawing from a network first used within the last day."),
    (
        "withdrawal",
        "hours_since_security_change",
        "lt",
        24,
        "review",
        "The password or second factor changed less than a day ago.",
    ),
    (
        "payout_account_change",
        "new_device",
        "gte",
        1,
        "review",
        "Adding a payout account from a device first used within the last day.",
    ),
    (
        "payout_account_change",
        "new_network",
        "gte",
        1,
        "review",
        "Adding a payout account from a network first used within the last day.",
    ),
    (
        "payout_account_change",
        "hours_since_security_change",
        "lt",
        24,
        "review",
        "The password or second factor changed less than a day ago.",
    ),
]


def rules_add(apps, schema_editor):
    Rule = apps.get_model("risk", "Rule")
    for event, signal, comparison, threshold, outcome, description in DEFAULT_RULES:
        Rule.objects.get_or_create(
            event=event,
            signal=signal,
            comparison=comparison,
            threshold=threshold,
            outcome=outcome,
            defaults={"description": description},
        )


class Migration(migrations.Migration):
    dependencies = [("risk", "0001_initial")]

    operations = [migrations.RunPython(rules_add, migrations.RunPython.noop)]
