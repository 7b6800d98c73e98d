"""ASE calculators a user names in config as `mlip.backend: user_calculators:<factory>`.

pytest puts tests/ on sys.path, so `user_calculators` imports here as any user module
on PYTHONPATH would in the workflow.
"""


def chgnet_calculator(model: str = "0.3.0"):
    """CHGNet's own ASE calculator: a real potential, run one structure at a time through ASE."""
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    return CHGNetCalculator(model=CHGNet.load(model_name=model, use_device="cpu", verbose=False),
                            use_device="cpu", on_isolated_atoms="ignore")

