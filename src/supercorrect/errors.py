"""One exception type for problems the user can fix (bad config, bad data, missing files).

The CLI prints such errors as one line and exits with code 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's config, data or environment, explained in one line."""
