"""Helpers for the merchant API tests: a client with a token of chosen scopes."""

from django.test import Client
from django.utils import timezone

from shop import services


def token_client(merchant, scopes=None, **headers) -> Client:
    """A client sending `Authorization: Token …` for a new token of `merchant` (every scope by default)."""
    _record, secret = services.merchant_api_token_create_unchecked(
        merchant=merchant, name="test", actor=None, now=timezone.now(), scopes=scopes
    )
    return Client(HTTP_AUTHORIZATION=f"Token {secret}", **headers)


def post_json(client: Client, path: str, data, **headers):
    return client.post(path, data=data, content_type="application/json", headers=headers)


def patch_json(client: Client, path: str, data, **headers):
    return client.patch(path, data=data, content_type="application/json", headers=headers)
