"""The one error every embedder raises when it cannot run here (its own module, so that the text and
visual embedder modules share it without importing each other)."""


class EmbedderError(RuntimeError):
    """An embedder cannot run here (missing package, weights or device); the message says how to fix it."""
