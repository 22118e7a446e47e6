"""The `lightjob` command. Each subcommand imports what it needs, when it runs."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightjob", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crd = commands.add_parser("crd", help="print the LightningJob CustomResourceDefinition")
    crd.add_argument(
        "--markdown", action="store_true", help="print the field reference (docs/api.md) instead"
    )
    crd.set_defaults(handler=_crd)

    validate = commands.add_parser("validate", help="check LightningJob YAML files")
    validate.add_argument("files", nargs="+", metavar="FILE", help="YAML files ('-' for stdin)")
    validate.set_defaults(handler=_validate)

    run = commands.add_parser(
        "run", help="run a LightningJob on this machine (or --kube: on a cluster)"
    )
    run.add_argument("file", metavar="JOB.yaml")
    run.add_argument("--nodes", type=int, help="override spec.numNodes")
    preempt = run.add_mutually_exclusive_group()
    preempt.add_argument(
        "--preempt-at-step",
        type=int,
        metavar="N",
        help="preempt a random node once node 0 has reported step N (on its metrics "
        "endpoint): training is under way, so the job resumes from a checkpoint",
    )
    preempt.add_argument(
        "--preempt-after",
        type=float,
        metavar="SECONDS",
        help="preempt a random node this long after all nodes run (may land in start-up, "
        "before any checkpoint)",
    )
    previous = run.add_mutually_exclusive_group()
    previous.add_argument(
        "--resume",
        action="store_const",
        const="resume",
        dest="previous_run",
        help="continue the job's previous run from its checkpoint, even one that finished "
        "(by default only a suspended or interrupted run resumes)",
    )
    previous.add_argument(
        "--fresh",
        action="store_const",
        const="fresh",
        dest="previous_run",
        help="start a new run even if the previous one was suspended or interrupted (by "
        "default only a finished run is set aside); the previous run is moved to "
        "RUNS_DIR/JOB.N and its checkpoints to URI/previous-N, never deleted",
    )
    run.add_argument("--runs-dir", default="runs", help="where logs, status and checkpoints go")
    run.add_argument(
        "--backoff-seconds", type=float, default=2.0, help="first back-off after a failure"
    )
    run.add_argument(
        "--kube",
        action="store_true",
        help="apply the job to the current kubeconfig cluster and follow it instead",
    )
    run.add_argument("--context", help="kubeconfig context for --kube (implies --kube)")
    run.set_defaults(handler=_run)

    operator = commands.add_parser("operator", help="run the LightningJob operator (kopf)")
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces")
    election = operator.add_mutually_exclusive_group()
    election.add_argument(
        "--leader-elect",
        action="store_true",
        help="act only while holding a coordination.k8s.io Lease (run several replicas)",
    )
    election.add_argument(
        "--peering",
        metavar="NAME",
        help="join this kopf peering object instead (kopf freeze/resume; no failover)",
    )
    for flag, default, what in LEADER_ELECT_FLAGS:
        operator.add_argument(
            f"--leader-elect-{flag}",
            metavar="SECONDS" if isinstance(default, float) else "NAME",
            type=type(default),
            help=f"{what} (default: {default or 'env POD_NAMESPACE, else default'})",
        )
    operator.add_argument(
        "--liveness",
        metavar="URL",
        help="serve kopf's liveness endpoint here, e.g. http://0.0.0.0:8081/healthz",
    )
    operator.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics")
    operator.add_argument(
        "--interval",
        type=float,
        default=10.0,
        help="seconds between timer-driven reconciles of each job",
    )
    operator.add_argument(
        "--backoff-seconds",
        type=float,
        default=10.0,
        help="first back-off after a failure; doubles per failure",
    )
    operator.add_argument(
        "--force-delete-after",
        type=float,
        default=60.0,
        help="force-delete a pod still terminating this many seconds after its grace period",
    )
    operator.add_argument(
        "--progress-interval",
        type=float,
        default=15.0,
        help="read a running job's progress from node 0 at most this often (seconds)",
    )
    operator.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format"
    )
    operator.set_defaults(handler=_operator)

    args = parser.parse_args(argv)
    if args.command == "operator":
        problem = _operator_problem(args)
        if problem:
            operator.error(problem)
    return int(args.handler(args))


# (flag after --leader-elect-, default, help): kube-scheduler's flags, with its defaults.
LEADER_ELECT_FLAGS: list[tuple[str, float | str, str]] = [
    ("lease-duration", 15.0, "a standby takes over after this long without a renewal"),
    ("renew-deadline", 10.0, "the leader exits after failing to renew for this long"),
    ("retry-period", 2.0, "how often the leader renews and a standby looks"),
    ("resource-name", "lightjob", "name of the Lease"),
    ("resource-namespace", "", "namespace of the Lease"),
]


def _operator_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with `lightjob operator`'s flags, naming them; None when nothing."""
    given = [f for f, _, _ in LEADER_ELECT_FLAGS if getattr(args, _dest(f)) is not None]
    if given and not args.leader_elect:
        return f"--leader-elect-{given[0]} needs --leader-elect"
    for flag, default, _ in LEADER_ELECT_FLAGS:
        if getattr(args, _dest(flag)) is None:
            setattr(args, _dest(flag), default)
    lease, renew, retry = (
        args.leader_elect_lease_duration,
        args.leader_elect_renew_deadline,
        args.leader_elect_retry_period,
    )
    if retry <= 0:
        return "--leader-elect-retry-period must be positive"
    if not retry < renew < lease:
        return (
            "leader election needs --leader-elect-retry-period < --leader-elect-renew-deadline"
            f" < --leader-elect-lease-duration (got {retry} < {renew} < {lease}): the leader"
            " must give up before a standby may take over"
        )
    if args.liveness is not None:
        from urllib.parse import urlsplit

        url = urlsplit(args.liveness)
        if url.scheme != "http" or not url.port or not url.path:
            return f"--liveness must look like http://0.0.0.0:8081/healthz, not {args.liveness!r}"
    return None


def _dest(flag: str) -> str:
    return "leader_elect_" + flag.replace("-", "_")


CRD_HEADER = "# Generated by `lightjob crd` from lightjob/api/models.py. Do not edit.\n"


def _crd(args: argparse.Namespace) -> int:
    import yaml

    from lightjob.api.crd import build_crd, render_reference

    crd = build_crd()
    if args.markdown:
        sys.stdout.write(render_reference(crd))
    else:
        sys.stdout.write(CRD_HEADER + yaml.safe_dump(crd, sort_keys=False, width=100))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from lightjob.api.validate import read_documents, read_file

    num_bad = num_good = 0
    for name in args.files:
        docs = read_documents("<stdin>", sys.stdin.read()) if name == "-" else read_file(name)
        for doc in docs:
            if doc.problems:
                num_bad += 1
                print("\n".join(doc.report()), file=sys.stderr)
            else:
                num_good += 1
                print(f"{doc.label}: valid LightningJob")
    if num_bad:
        print(f"{num_bad} invalid document(s), {num_good} valid", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.kube or args.context:
        local_only = [
            ("--nodes", args.nodes),
            ("--preempt-at-step", args.preempt_at_step),
            ("--preempt-after", args.preempt_after),
            (f"--{args.previous_run}", args.previous_run),
        ]
        given = [flag for flag, value in local_only if value is not None]
        if given:
            print(f"lightjob run: {given[0]} applies to local runs, not --kube", file=sys.stderr)
            return 2
        from lightjob.local.follow import follow

        return follow(args.file, context=args.context)
    from lightjob.local.runner import Run

    for flag, value, least in (
        ("--nodes", args.nodes, 1),
        ("--preempt-at-step", args.preempt_at_step, 1),
        ("--preempt-after", args.preempt_after, 0),
    ):
        if value is not None and value < least:
            print(f"lightjob run: {flag} must be >= {least}", file=sys.stderr)
            return 2
    return Run(
        args.file,
        nodes=args.nodes,
        preempt_after=args.preempt_after,
        preempt_at_step=args.preempt_at_step,
        previous_run=args.previous_run,
        runs_dir=args.runs_dir,
        backoff_seconds=args.backoff_seconds,
    ).main()


def _operator(args: argparse.Namespace) -> int:
    import os

    from lightjob.operator.election import LeaseConfig, own_identity
    from lightjob.operator.handlers import OperatorConfig, run

    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    election = None
    if args.leader_elect:
        election = LeaseConfig(
            name=args.leader_elect_resource_name,
            namespace=args.leader_elect_resource_namespace
            or os.environ.get("POD_NAMESPACE", "default"),
            identity=own_identity(),
            lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline,
            retry_period=args.leader_elect_retry_period,
        )
    run(
        OperatorConfig(
            namespaces=() if args.all_namespaces else tuple(args.namespace),
            peering=args.peering,
            interval=args.interval,
            backoff_base=args.backoff_seconds,
            force_delete_after=args.force_delete_after,
            metrics_port=args.metrics_port,
            progress_interval=args.progress_interval,
            log_format=args.log_format,
            liveness=args.liveness,
            leader_election=election,
            kubeconfig=None
            if in_cluster
            else os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config")),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
