class Refused(Exception):
    """A request the rules refuse; nothing changed. The message is for people, `code` for the API.

    The API answers it with `status_code`, or the status `code_statuses` gives that code (409 for a state
    or stock conflict, 503 for what may pass); `code_fields` names the input field a code is about."""

    status_code = 400
    # Codes that mean the same in every app; a subclass extends this with `{**Refused.code_statuses, …}`.
    code_statuses: dict[str, int] = {"not_found": 404, "bad_state": 409, "out_of_stock": 409}
    code_fields: dict[str, str] = {}
    # More fields for the API's error body (e.g. the risk decision's id); an instance sets its own.
    extra: dict[str, object] = {}  # read only; an instance sets its own

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code

    @property
    def status(self) -> int:
        return self.code_statuses.get(self.code, self.status_code)
