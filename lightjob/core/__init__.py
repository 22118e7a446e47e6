"""Lightning's `lightning.pytorch.core` paths: `from lightning.pytorch.core.saving import X`
becomes `from lightjob.core.saving import X`. Importing this package loads no torch."""
