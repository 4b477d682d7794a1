"""Development secrets: generated once, and a file made before a secret existed gains it."""

import base64

from config.local_secrets import load_local_secrets


def test_a_fresh_file_holds_the_evidence_signing_key(tmp_path):
    path = tmp_path / "local.env"
    values = load_local_secrets(path)
    assert len(base64.b64decode(values["EVIDENCE_SIGNING_KEY"])) == 32
    assert load_local_secrets(path) == values  # the same values on every start


def test_an_older_file_gains_the_secrets_added_since_and_keeps_its_own(tmp_path):
    path = tmp_path / "local.env"
    path.write_text("# old\nSECRET_KEY=kept\nCARDKEY_INDEX_KEY=also-kept\n")
    values = load_local_secrets(path)
    assert (values["SECRET_KEY"], values["CARDKEY_INDEX_KEY"]) == ("kept", "also-kept")
    assert len(base64.b64decode(values["EVIDENCE_SIGNING_KEY"])) == 32
    assert load_local_secrets(path) == values
