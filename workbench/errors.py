"""The one exception type for the user's mistakes.

Its message is what the user reads: one line naming the problem and what to do.
Anything else that escapes is a bug in the workbench.
"""


class WorkbenchError(Exception):
    """A problem with what the user gave us (a file, a feed, an option)."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))
