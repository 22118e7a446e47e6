"""The Kubernetes operator: kopf handlers that read the world, ask `lightjob.controller`
for a plan, and apply it. Imports no torch."""
