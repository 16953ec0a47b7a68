"""The base of every error that solulab reports to a user as one line (exit status 2)."""


class SolulabError(ValueError):
    """Bad input or a state that cannot be used; the message says what to change."""
