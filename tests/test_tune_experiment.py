"""Two runs of the same command at once do not drive one Ray Tune experiment: the second searches in a folder of its
own, and the experiment's name is free again once the first search ends."""

from __future__ import annotations

from pathlib import Path

from mlcycle.tasks.train.tune import _claim_experiment


def test_a_second_search_of_the_same_experiment_gets_a_folder_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "adult-abc-def"
    first, lock = _claim_experiment(path)
    assert first == path and lock is not None

    second, second_lock = _claim_experiment(path)  # another run of the same command, while the first searches
    assert second != path and second.parent == tmp_path and second.name.startswith(path.name + "-")
    assert second_lock is None

    lock.close()  # the first search ended
    again, again_lock = _claim_experiment(path)
    assert again == path and again_lock is not None  # the same command run later resumes the experiment
    again_lock.close()
