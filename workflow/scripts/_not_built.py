"""Shared stub for stages whose implementation has not landed yet.

It fails loudly with the missing capability instead of writing fake outputs.
"""


def fail(stage: str, capability: str) -> None:
    raise NotImplementedError(
        f"stage '{stage}' is not built yet: {capability}. No output was written; "
        "see the project's issues for its status."
    )
