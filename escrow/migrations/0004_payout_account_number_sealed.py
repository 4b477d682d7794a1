"""Payout account numbers out of plaintext: each is padded and sealed under its merchant's data key,
bound to its row; only the last four characters stay in the clear, for display. Existing rows are
sealed here (the master keys come from the settings, as at run time); backwards, they are opened again."""

from django.db import migrations, models

from core import crypto


def _aad(pk):
    return b"cardshop:payout-account-number:%d" % pk


def _data_key(merchant):
    return crypto.data_key_unwrap(
        version=merchant.data_key_version,
        wrapped=merchant.data_key_wrapped,
        associated_data=f"cardshop:data-key:merchant:{merchant.pk}".encode(),
        owner=f"the data key of merchant {merchant.pk}",
    )


def seal_numbers(apps, schema_editor):
    PayoutAccount = apps.get_model("escrow", "PayoutAccount")
    for account in PayoutAccount.objects.select_related("merchant").order_by("pk"):
        number = account.account_number
        account.number_sealed = crypto.aead_seal(
            key=_data_key(account.merchant), plaintext=crypto.pad(number.encode()), associated_data=_aad(account.pk)
        )
        account.number_last4 = number[-4:]
        account.account_number = ""
        account.save(update_fields=["number_sealed", "number_last4", "account_number"])


def open_numbers(apps, schema_editor):
    PayoutAccount = apps.get_model("escrow", "PayoutAccount")
    for account in PayoutAccount.objects.select_related("merchant").order_by("pk"):
        padded = crypto.aead_open(
            key=_data_key(account.merchant), sealed=account.number_sealed, associated_data=_aad(account.pk)
        )
        account.account_number = crypto.unpad(padded).decode()
        account.save(update_fields=["account_number"])


class Migration(migrations.Migration):
    dependencies = [
        ("escrow", "0003_liabilitypublication_alter_ledgeraccount_kind_and_more"),
        ("shop", "0004_card_keys_per_merchant_fingerprint_and_padding"),
    ]

    operations = [
        migrations.AddField(
            model_name="payoutaccount",
            name="number_sealed",
            field=models.BinaryField(default=b"", editable=False),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="payoutaccount",
            name="number_last4",
            field=models.CharField(default="", editable=False, max_length=4),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="payoutaccount",
            name="account_number",
            field=models.CharField(blank=True, max_length=64, verbose_name="account number or wallet id"),
        ),
        migrations.RunPython(seal_numbers, open_numbers),
        migrations.RemoveField(model_name="payoutaccount", name="account_number"),
    ]
