import pytest
from django.core.management import call_command
from django.test import Client

from shop.models import MerchantApiToken

pytestmark = pytest.mark.django_db


def _token(output: str) -> str:
    line = next(line for line in output.splitlines() if "API token" in line)
    return line.rsplit(" ", 1)[1]


def test_seed_demo_prints_a_working_token_and_is_idempotent(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("seed_demo")
    first = _token(capsys.readouterr().out)
    call_command("seed_demo")
    second = _token(capsys.readouterr().out)

    assert first == second
    assert MerchantApiToken.objects.filter(revoked_at=None).count() == 1
    response = Client(HTTP_AUTHORIZATION=f"Token {first}").get("/api/v1/merchant/products/")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 3
    assert MerchantApiToken.objects.get(revoked_at=None).scopes == ["read", "stock", "orders", "money"]

    (tmp_path / "demo-merchant-token.txt").unlink()  # the secret is lost: a new token replaces the old
    call_command("seed_demo")
    third = _token(capsys.readouterr().out)
    assert third != first
    assert MerchantApiToken.objects.filter(revoked_at=None).count() == 1
    assert Client(HTTP_AUTHORIZATION=f"Token {first}").get("/api/v1/merchant/products/").status_code == 401


def _two_factor(output: str) -> dict[str, tuple[str, list[str]]]:
    """{role: (otpauth URI, backup codes)} from the printout."""
    lines = output.splitlines()
    found = {}
    for index, line in enumerate(lines):
        if "otpauth://" in line:
            role, uri = line.split()
            found[role] = (uri, lines[index + 1].split("backup codes:", 1)[1].split())
    return found


def test_seed_demo_gives_merchant_and_staff_a_device_and_backup_codes(settings, tmp_path, capsys):
    from django.test import Client

    from accounts import services as accounts_services
    from accounts.models import AuthenticatorDevice, User

    settings.VAR_DIR = tmp_path
    call_command("seed_demo")
    first = _two_factor(capsys.readouterr().out)
    assert set(first) == {"merchant", "staff"}
    for role, (uri, codes) in first.items():
        device = AuthenticatorDevice.objects.get(user__username=role, confirmed=True)
        assert uri == device.config_url and uri.startswith("otpauth://totp/")
        assert len(codes) == 5
    assert not AuthenticatorDevice.objects.filter(user__username="buyer").exists()
    codes_file = tmp_path / "demo-backup-codes.json"
    assert codes_file.stat().st_mode & 0o777 == 0o600

    # The printed backup code signs the demo merchant in; a rerun prints the same device, minus that code.
    client = Client()
    client.post("/accounts/login/", {"username": "merchant", "password": "demo-pass-123"})
    assert client.post("/account/security/verify/", {"code": first["merchant"][1][0], "next": "/merchant/"}).url == (
        "/merchant/"
    )
    call_command("seed_demo")
    second = _two_factor(capsys.readouterr().out)
    assert second["merchant"] == (first["merchant"][0], first["merchant"][1][1:])
    assert second["staff"] == first["staff"]
    assert AuthenticatorDevice.objects.filter(user__username__in=["merchant", "staff"]).count() == 2

    codes_file.unlink()  # the plaintext copy is lost: new codes replace the old ones
    call_command("seed_demo")
    third = _two_factor(capsys.readouterr().out)
    assert third["staff"][0] == first["staff"][0]
    assert not set(third["staff"][1]) & set(first["staff"][1])
    staff = User.objects.get(username="staff")
    assert accounts_services.backup_codes_unused(user=staff, codes=first["staff"][1]) == []
    assert accounts_services.backup_codes_left(staff) == 5


def test_seed_demo_prints_a_working_staff_token_and_is_idempotent(settings, tmp_path, capsys):
    from accounts.models import StaffApiToken

    settings.VAR_DIR = tmp_path

    def staff_token() -> str:
        call_command("seed_demo")
        line = next(line for line in capsys.readouterr().out.splitlines() if "staff API token" in line)
        return line.rsplit(" ", 1)[1]

    first = staff_token()
    assert first == staff_token()
    assert StaffApiToken.objects.filter(user__username="staff", revoked_at=None).count() == 1
    # It authenticates as staff on the staff API (an unknown dispute: 404, not 401).
    response = Client(HTTP_AUTHORIZATION=f"Token {first}").post(
        "/api/v1/staff/disputes/999999/decide/", {}, content_type="application/json"
    )
    assert response.status_code == 404


def _seed_json(capsys, *args) -> dict:
    import json

    call_command("seed_demo", "--json", *args)
    return json.loads(capsys.readouterr().out)  # stdout is the JSON object and nothing else


def test_seed_demo_json_gives_scripts_every_login_token_and_product(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    data = _seed_json(capsys, "--merchants", "2")
    roles = [user["role"] for user in data["users"]]
    assert sorted(roles) == ["buyer", "merchant", "merchant", "staff"]
    for user in data["users"]:
        assert set(user) == {"role", "username", "email", "password", "otpauth", "backup_codes", "token"}
        assert Client().login(username=user["username"], password=user["password"])
        if user["role"] in ("merchant", "staff"):
            assert user["otpauth"].startswith("otpauth://totp/")
            assert len(user["backup_codes"]) == 5
            assert user["token"]
    merchants = [user for user in data["users"] if user["role"] == "merchant"]
    assert len({m["username"] for m in merchants}) == 2
    for merchant in merchants:
        response = Client(HTTP_AUTHORIZATION=f"Token {merchant['token']}").get("/api/v1/merchant/products/")
        assert response.status_code == 200
        theirs = {p["id"] for p in data["products"] if p["merchant"] == merchant["username"]}
        assert {p["id"] for p in response.json()["results"]} == theirs
        assert len(theirs) == 3
    staff = next(user for user in data["users"] if user["role"] == "staff")
    assert Client(HTTP_AUTHORIZATION=f"Token {staff['token']}").get("/api/v1/staff/disputes/").status_code == 200
    on_sale = {p["id"]: p["stock"] for p in Client().get("/api/v1/products/").json()["results"]}
    for product in data["products"]:
        assert product["stock"] > 0
        assert on_sale[product["id"]] == product["stock"]

    again = _seed_json(capsys, "--merchants", "2")
    assert again == data  # idempotent: the same users, tokens, codes and products
    assert MerchantApiToken.objects.filter(revoked_at=None).count() == 2


def test_seed_demo_json_defaults_to_one_merchant_and_refuses_a_bad_count(settings, tmp_path, capsys):
    from django.core.management import CommandError

    settings.VAR_DIR = tmp_path
    data = _seed_json(capsys)
    assert [user["role"] for user in data["users"]] == ["merchant", "buyer", "staff"]
    assert len(data["products"]) == 3
    with pytest.raises(CommandError, match="--merchants must be between 1 and"):
        call_command("seed_demo", "--json", "--merchants", "0")


def test_seed_demo_restocks_a_sold_out_demo_product(settings, tmp_path, capsys):
    from shop.models import CardKey, CardKeyStatus

    settings.VAR_DIR = tmp_path
    data = _seed_json(capsys)
    sold_out = data["products"][0]["id"]
    CardKey.objects.filter(product_id=sold_out).update(status=CardKeyStatus.REVOKED)
    again = _seed_json(capsys)
    assert next(p for p in again["products"] if p["id"] == sold_out)["stock"] > 0
