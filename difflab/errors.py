"""The one exception type whose message is shown to users as a single line."""


class DifflabError(Exception):
    """Bad input or a missing resource; the CLI prints the message alone and exits with code 2."""
