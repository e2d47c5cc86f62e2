"""The one exception type the steps turn into a single error line and a non-zero exit."""


class K8sccError(Exception):
    """A failure explained in one line for the peer's log."""
