"""lightjob: PyTorch Lightning's API, run as Kubernetes jobs.

`import lightjob` stays cheap (no torch): the training API is loaded on first use, so
`import lightjob as L; L.Trainer` works while the operator never pays for torch.
"""

__version__ = "0.1.0"
