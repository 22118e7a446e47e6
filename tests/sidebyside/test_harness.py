"""The side-by-side harness itself: where lightjob and Lightning already agree, it says so;
where they differ, it shows the difference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.sidebyside.frameworks import (
    Framework,
    boring_model,
    quiet,
    recording,
    run_both,
    weights_of,
)


def test_the_same_script_trains_the_same_weights(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> dict[str, list[float]]:
        model = boring_model(fw)()
        fw.Trainer(**quiet(root), max_epochs=1, limit_val_batches=0).fit(model)
        return weights_of(model)

    ours, theirs = run_both(scenario, tmp_path)
    assert ours.keys() == {"layer.weight", "layer.bias"}
    for name in ours:
        assert (
            ours[name] == theirs[name]
            or max(abs(a - b) for a, b in zip(ours[name], theirs[name], strict=True)) < 1e-6
        ), name


def test_a_recording_sees_the_hooks_a_framework_calls(tmp_path: Path) -> None:
    def scenario(fw: Framework, root: Path) -> list[str]:
        calls: list[str] = []
        module_class, callback = recording(fw, boring_model(fw), calls)
        trainer = fw.Trainer(**quiet(root), callbacks=[callback])
        trainer.test(module_class())
        return calls

    ours, theirs = run_both(scenario, tmp_path)
    test_batches: list[Any] = [c for c in theirs if c.endswith("on_test_batch_end")]
    assert len(test_batches) == 2 * 32  # module and callback, once per batch
    assert sorted(ours) == sorted(theirs)
