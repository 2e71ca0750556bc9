"""edge-ecg: 12-lead ECG from PTB-XL to a microcontroller.

Importing the package only defines things: no folders are created, no environment
variables are set. TensorFlow is imported lazily through :mod:`edge_ecg.tf` by the
stages that need it.
"""

__version__ = "0.1.0"

CLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
"""The five PTB-XL diagnostic superclasses, in the order of every label vector."""
