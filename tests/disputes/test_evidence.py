"""The signed evidence package: who may download it, what it holds, and `verify_evidence` catching
any change to any byte of any member or of the signature."""

import base64
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from disputes import evidence, services
from tests import factories
from tests.disputes.helpers import everything
from tests.disputes.test_staff_pages import UA, escalated, staff

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def decided(run_on_commit):
    dispute = escalated(run_on_commit)
    _, user = staff()
    with run_on_commit():
        services.dispute_decide(
            dispute_pk=dispute.pk,
            outcome="split",
            buyer_percent=40,
            reason="Revealed <script>x</script> once.",
            now=timezone.now(),
            actor=user,
        )
    return dispute


def verify(path) -> tuple[int, str]:
    """(exit code, the one line) of `manage.py verify_evidence` run in-process."""
    out = io.StringIO()
    try:
        call_command("verify_evidence", str(path), stdout=out)
    except CommandError as error:
        return error.returncode, str(error)
    return 0, out.getvalue().strip()


def rebuilt(data: bytes, *, name: str, change) -> bytes:
    """The package with member `name`'s bytes passed through `change`, everything else as it was."""
    source = zipfile.ZipFile(io.BytesIO(data))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for member in source.namelist():
            body = source.read(member)
            target.writestr(member, change(body) if member == name else body)
    return buffer.getvalue()


def flip(position: int):
    def change(body: bytes) -> bytes:
        index = position % len(body)
        return body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]

    return change


def test_the_package_holds_the_summary_the_record_and_a_signature_that_verifies(run_on_commit, tmp_path):
    dispute = decided(run_on_commit)
    client, _ = staff()
    response = client.get(f"/staff/disputes/{dispute.pk}/evidence.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == ["manifest.json", "record.json", "signature", "summary.html"]

    record = json.loads(archive.read("record.json"))
    assert record["order"]["id"] == dispute.order_id and record["order"]["delivered_at"]
    assert record["payments"][0]["status"] == "succeeded"
    assert [reveal["user_agent"] for reveal in record["reveals"]] == [UA]
    assert record["reveals"][0]["ip"] == "127.0.0.1"
    assert [entry["action"] for entry in record["delivery"]] == ["order.delivered"]
    assert [message["role"] for message in record["messages"]] == ["merchant", "staff"]
    assert record["decision"] == {
        "outcome": "split",
        "buyer_percent": 40,
        "reason": "Revealed <script>x</script> once.",
        "resolved_at": record["decision"]["resolved_at"],
        "by": "staff",
    }
    assert {"payment", "refund"} <= {transfer["code"] for transfer in record["transfers"]}
    assert "sealed" not in json.dumps(record)  # no key material

    summary = archive.read("summary.html").decode()
    assert "&lt;script&gt;x&lt;/script&gt;" in summary and "<script>" not in summary
    assert "The key &lt;b&gt;never&lt;/b&gt; worked." in summary

    path = tmp_path / "evidence.zip"
    path.write_bytes(response.content)
    code, line = verify(path)
    assert code == 0 and line.startswith(f"intact: the evidence of dispute {dispute.pk}")


def test_altering_any_byte_of_any_member_or_the_signature_is_caught(run_on_commit, tmp_path):
    dispute = decided(run_on_commit)
    data = evidence.evidence_package(dispute=dispute, now=timezone.now())
    path = tmp_path / "evidence.zip"
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    for name in names:
        size = len(zipfile.ZipFile(io.BytesIO(data)).read(name))
        for position in sorted({0, size // 2, size - 1}):
            path.write_bytes(rebuilt(data, name=name, change=flip(position)))
            code, line = verify(path)
            assert code == 1, (name, position, line)
            if name in {"manifest.json", "signature"}:
                assert line.startswith("altered: bad signature"), line
            else:
                assert line == f"altered: {name} was altered", line

    # A byte changed inside the archive itself (not re-zipped): the ZIP's checksum names the member.
    stored = zipfile.ZipFile(io.BytesIO(data))
    info = stored.getinfo("record.json")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw = bytearray(data)
    raw[start + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    code, line = verify(path)
    assert code == 1 and "record.json" in line, line

    # A member added or removed after signing.
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("extra.txt", b"planted")
    path.write_bytes(buffer.getvalue())
    assert verify(path) == (1, "altered: extra.txt was added")

    # Signed by another key.
    other = tmp_path / "other.zip"
    original = settings.EVIDENCE_SIGNING_KEY
    settings.EVIDENCE_SIGNING_KEY = base64.b64encode(os.urandom(32)).decode()
    try:
        other.write_bytes(evidence.evidence_package(dispute=dispute, now=timezone.now()))
    finally:
        settings.EVIDENCE_SIGNING_KEY = original
    assert verify(other)[0] == 1

    path.write_bytes(data)
    assert verify(path)[0] == 0


def test_an_unreadable_file_exits_2(tmp_path):
    path = tmp_path / "not.zip"
    path.write_bytes(b"hello")
    code, line = verify(path)
    assert code == 2 and line.startswith("unreadable:")
    assert verify(tmp_path / "missing.zip")[0] == 2


def test_the_public_key_is_printable():
    out = io.StringIO()
    call_command("verify_evidence", "--public-key", stdout=out)
    printed = base64.b64decode(out.getvalue().strip())
    assert len(printed) == 32 and out.getvalue().strip() == evidence.public_key_text()


def test_verify_evidence_as_a_real_process(run_on_commit, tmp_path):
    dispute = decided(run_on_commit)
    data = evidence.evidence_package(dispute=dispute, now=timezone.now())
    intact = tmp_path / "intact.zip"
    intact.write_bytes(data)
    altered = tmp_path / "altered.zip"
    altered.write_bytes(rebuilt(data, name="summary.html", change=flip(10)))
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK not really")
    env = {**os.environ, "EVIDENCE_SIGNING_KEY": settings.EVIDENCE_SIGNING_KEY}

    def run(path):
        return subprocess.run(
            [sys.executable, "manage.py", "verify_evidence", str(path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    result = run(intact)
    assert result.returncode == 0 and result.stdout.startswith("intact:"), result.stderr
    result = run(altered)
    assert result.returncode == 1 and "altered: summary.html was altered" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert run(broken).returncode == 2


def test_each_party_downloads_their_own_package_and_everyone_else_gets_404(run_on_commit):
    dispute = escalated(run_on_commit, buyer=factories.user_create())
    order = dispute.order
    guest_dispute = escalated(run_on_commit)

    buyer = Client()
    buyer.force_login(order.buyer)
    merchant = Client()
    factories.login_verified(merchant, order.merchant.user)
    other_merchant = Client()
    factories.login_verified(other_merchant, guest_dispute.order.merchant.user)
    stranger = Client()
    stranger.force_login(factories.user_create())
    before = everything()

    assert buyer.get(f"/disputes/{dispute.pk}/evidence.zip").status_code == 200
    assert merchant.get(f"/merchant/disputes/{dispute.pk}/evidence.zip").status_code == 200
    token = guest_dispute.order.access_token
    guest = Client().get(f"/orders/{guest_dispute.order_id}/t/{token}/dispute/evidence.zip")
    assert guest.status_code == 200 and guest["Content-Type"] == "application/zip"

    denied = [
        (Client(), f"/disputes/{dispute.pk}/evidence.zip"),
        (stranger, f"/disputes/{dispute.pk}/evidence.zip"),
        (merchant, f"/disputes/{dispute.pk}/evidence.zip"),  # the merchant is not the buyer
        (buyer, f"/disputes/{guest_dispute.pk}/evidence.zip"),
        (Client(), f"/merchant/disputes/{dispute.pk}/evidence.zip"),
        (stranger, f"/merchant/disputes/{dispute.pk}/evidence.zip"),
        (other_merchant, f"/merchant/disputes/{dispute.pk}/evidence.zip"),
        (buyer, f"/merchant/disputes/{dispute.pk}/evidence.zip"),
        (Client(), f"/orders/{guest_dispute.order_id}/t/wrong-token/dispute/evidence.zip"),
        (Client(), f"/orders/{dispute.order_id}/t/{token}/dispute/evidence.zip"),  # another order's token
        (buyer, "/disputes/999999/evidence.zip"),
    ]
    for client, url in denied:
        assert client.get(url).status_code == 404, url
    assert everything() == before


def test_the_merchant_download_needs_a_second_factor(run_on_commit):
    dispute = escalated(run_on_commit)
    merchant = Client()
    merchant.force_login(dispute.order.merchant.user)
    response = merchant.get(f"/merchant/disputes/{dispute.pk}/evidence.zip")
    assert response.status_code == 302 and "/account/security/" in response["Location"]


def test_the_package_and_the_staff_page_carry_the_screenshots(run_on_commit, tmp_path, settings):
    """The attachments (disputes/attachments.py) are in the package, byte for byte as stored, and the
    staff page links each one to the view that serves it only to the parties and staff."""
    from disputes.attachments import attachment_path, dispute_attachments_add
    from tests.disputes.test_pages import png

    settings.DISPUTE_FILES_ROOT = tmp_path / "files"
    dispute = escalated(run_on_commit)
    [shot] = dispute_attachments_add(dispute_pk=dispute.pk, role="buyer", uploads=[png()], now=timezone.now())
    client, _ = staff()

    page = client.get(f"/staff/disputes/{dispute.pk}/").content.decode()
    assert f'href="/disputes/{dispute.pk}/files/{shot.pk}/"' in page
    assert client.get(f"/disputes/{dispute.pk}/files/{shot.pk}/").status_code == 200

    response = client.get(f"/staff/disputes/{dispute.pk}/evidence.zip")
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    member = f"attachments/{shot.pk}-{shot.stored_name}"
    assert archive.read(member) == attachment_path(shot).read_bytes()
    assert json.loads(archive.read("record.json"))["attachments"] == [member]
    path = tmp_path / "evidence.zip"
    path.write_bytes(response.content)
    assert verify(path)[0] == 0
