"""Exceptions a user can catch, named as in Lightning so ported `except` clauses still work."""


class MisconfigurationException(ValueError):
    """The Trainer, a callback or the LightningModule was set up in a way that cannot work.

    Raised before training starts whenever possible, with a message that names the fix.
    """
