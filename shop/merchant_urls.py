app_name = "merchant"

urlpatterns: list = []
