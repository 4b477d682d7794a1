app_name = "merchant_money"

urlpatterns: list = []
