"""IA3 layers come from Hugging Face PEFT (``peft.tuners.ia3.layer``); nothing is written here."""

from peft.tuners.ia3.layer import Linear as IA3Linear  # noqa: F401  (re-exported for callers)
