"""VEN credentials from a Secret: decoding, what counts as secret, and that repr never shows them."""

from __future__ import annotations

import base64

import pytest
from wattplane.grid import VenCredentials


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_secret_data_is_decoded_and_unknown_keys_ignored() -> None:
    key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
    creds = VenCredentials.from_secret_data(
        {"venId": b64(" ven-77 \n"), "key": b64(key), "keyPassphrase": b64("hunter2"), "other": b64("x")}
    )
    assert creds.ven_id == "ven-77" and creds.key == key and creds.key_passphrase == "hunter2"
    assert creds.cert is None and creds.vtn_fingerprint is None
    secrets = creds.secret_values()
    assert (
        "ven-77" in secrets and "hunter2" in secrets and "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg" in secrets
    )
    assert "ven-77" not in repr(creds) and "hunter2" not in repr(creds)


def test_string_data_and_bad_base64() -> None:
    assert VenCredentials.from_secret_data({"venId": "plain"}, encoded=False).ven_id == "plain"
    with pytest.raises(ValueError, match="venId is not valid base64"):
        VenCredentials.from_secret_data({"venId": "not base64!"})
