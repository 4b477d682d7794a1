"""Each real gateway configured for a test with keys made here; nothing leaves the machine."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.utils import timezone

from escrow import services
from tests import factories

EPAY_KEY = "epay-merchant-key-for-tests"
STRIPE_WEBHOOK_SECRET = "whsec_test_secret_for_tests"


def _rsa_pair() -> tuple[rsa.RSAPrivateKey, str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return key, private_pem, public_pem


@pytest.fixture(scope="session")
def alipay_keys():
    """(the shop's private key, Alipay's private key): Alipay's half signs the notifies the tests send."""
    shop_key, shop_private_pem, _ = _rsa_pair()
    alipay_key, _, alipay_public_pem = _rsa_pair()
    return {
        "shop_key": shop_key,
        "shop_private_pem": shop_private_pem,
        "alipay_key": alipay_key,
        "alipay_public_pem": alipay_public_pem,
    }


@pytest.fixture
def real_gateways(settings, alipay_keys):
    settings.SHOP_BASE_URL = "https://shop.example.com"
    settings.EPAY_URL = "https://pay.example.net/"
    settings.EPAY_PID = "1001"
    settings.EPAY_KEY = EPAY_KEY
    settings.ALIPAY_APP_ID = "2021000000000001"
    settings.ALIPAY_PRIVATE_KEY = alipay_keys["shop_private_pem"]
    settings.ALIPAY_PUBLIC_KEY = alipay_keys["alipay_public_pem"]
    settings.ALIPAY_GATEWAY_URL = "https://openapi.alipay.example/gateway.do"
    settings.STRIPE_SECRET_KEY = "sk_test_for_tests"
    settings.STRIPE_WEBHOOK_SECRET = STRIPE_WEBHOOK_SECRET
    settings.PAYMENT_GATEWAYS = ["sandbox", "epay", "alipay", "stripe"]
    return settings


def place(*, gateway: str, price: int = 1500, currency: str = "CNY", stock: int = 3, merchant=None):
    product = factories.product_create(stock=stock, price=price, currency=currency, merchant=merchant)
    return services.order_place(
        product_pk=product.pk,
        quantity=1,
        email="buyer@example.com",
        buyer=None,
        now=timezone.now(),
        gateway_name=gateway,
    )
