"""Local mode: LightningJob pods as processes on this machine (`lightjob run`), and the
kubelet stand-in of the end-to-end tests. Uses the same controller as the operator."""
