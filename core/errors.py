class Refused(Exception):
    """A request the rules refuse; nothing changed. The message is for people, `code` for the API."""

    def __init__(self, message: str, code: str = "invalid"):
        super().__init__(message)
        self.code = code
