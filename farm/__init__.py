"""surreal-farm: a render farm for SURREAL-style synthetic humans.

Kept empty on purpose: importing `farm` must be cheap and free of side effects.
"""

__version__ = "0.1.0"
