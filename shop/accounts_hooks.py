"""What shop tells accounts (registered in `ShopConfig.ready`): who is a merchant."""

from shop.models import Merchant


def merchant_role(user) -> set[str]:
    return {"merchant"} if Merchant.objects.filter(user=user).exists() else set()
