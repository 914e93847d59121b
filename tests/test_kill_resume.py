"""Kill-and-resume and damaged-checkpoint trials of ``geomkfac train``.

- A training process killed with SIGKILL at an arbitrary moment (between, or in the
  middle of, a metrics write or a checkpoint write) and resumed with ``--resume`` ends
  bit-for-bit where an uninterrupted run ends: the same weights, the same optimizer state,
  the same metrics records (timings aside).
- A damaged checkpoint never resumes silently: ``--resume`` exits 2 with one line naming
  the file (and the earlier good checkpoint), or, when the damage left the payload intact,
  resumes to exactly the intact result.

The larger campaign (more kill points, every corruption, in real processes) is
``benchmarks/fuzz_report.py``; the figures are in the README.
"""

from __future__ import annotations

import os

import pytest

import fuzzing

STEPS = 14


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of STEPS steps, and a run stopped (cleanly) at step 9."""
    root = tmp_path_factory.mktemp("runs")
    full = str(root / "full")
    code, err = fuzzing.run_cli_in_process(fuzzing.TRAIN_ARGV + ["--steps", str(STEPS), "--out", full])
    assert code == 0, err
    part = str(root / "part")
    code, err = fuzzing.run_cli_in_process(fuzzing.TRAIN_ARGV + ["--steps", "9", "--out", part])
    assert code == 0, err
    return fuzzing.final_state(full), part


def test_sigkill_then_resume_is_bit_exact(reference, tmp_path):
    # killed once 8 metrics lines are written: after the checkpoint of step 6, racing the
    # writes of steps 9.. (more kill points: benchmarks/fuzz_report.py)
    outcome = fuzzing.kill_and_resume_trial(reference[0], str(tmp_path), STEPS, kill_after=8)
    assert outcome == "exact", outcome


def test_negative_control_resume_without_the_iterator_state_differs(reference, tmp_path):
    """The comparison is sharp: a resume that restarts the batch order (a plausible bug)
    is reported as different."""
    import geomkfac.nn.data as D

    full, part = reference
    out = str(tmp_path / "r")
    import shutil

    shutil.copytree(part, out)
    real = D.BatchIterator.load_state_dict

    def forget_position(self, state):
        real(self, state)
        self.epoch, self.position = 0, 0

    D.BatchIterator.load_state_dict = forget_position
    try:
        code, err = fuzzing.run_cli_in_process(fuzzing.TRAIN_ARGV + ["--steps", str(STEPS), "--out", out,
                                                                      "--resume"])
    finally:
        D.BatchIterator.load_state_dict = real
    # the counters check refuses it, or the result differs: never an exact match
    assert code == 2 or not fuzzing.same_final_state(fuzzing.final_state(out), full)


_SOME = ["truncate-tail", "append", "flip-at-0.5", "weight-one-ulp", "weight-shape+sum",
         "meta-step-1+sum", "meta-step+sum", "schema-7+sum", "checksum-missing"]


@pytest.fixture(scope="module")
def intact_resume(reference, tmp_path_factory):
    import shutil

    out = str(tmp_path_factory.mktemp("intact") / "r")
    shutil.copytree(reference[1], out)
    code, err = fuzzing.run_cli_in_process(fuzzing.TRAIN_ARGV + ["--steps", str(STEPS), "--out", out,
                                                                  "--resume"])
    assert code == 0, err
    state = fuzzing.final_state(out)
    assert fuzzing.same_final_state(state, reference[0])  # resuming an intact checkpoint is exact
    return state


@pytest.mark.parametrize("how", _SOME)
def test_damaged_checkpoint_fails_cleanly_or_resumes_exactly(reference, intact_resume, tmp_path, how):
    outcome = fuzzing.corrupt_trial(reference[1], str(tmp_path / "r"), STEPS, how, intact_resume,
                                    runner=fuzzing.run_cli_in_process)
    assert outcome in ("clean", "exact"), outcome
    if how != "append":  # only appended bytes leave the payload intact
        assert outcome == "clean"


def test_damaged_checkpoint_names_the_earlier_good_one(reference, tmp_path):
    import shutil

    out = str(tmp_path / "r")
    shutil.copytree(reference[1], out)
    path = os.path.join(out, "checkpoint-kfac.npz")
    with open(path, "r+b") as fh:
        fh.truncate(100)
    code, err = fuzzing.run_cli_in_process(fuzzing.TRAIN_ARGV + ["--steps", str(STEPS), "--out", out,
                                                                  "--resume"])
    assert code == 2
    assert f"an earlier good checkpoint (step 6) is {path}.prev" in err


@pytest.mark.parametrize("arch", ["conv2k3p1-max2-dense10", "rnn6-last-dense10"])
def test_cnn_and_rnn_runs_resume_exactly(tmp_path, arch):
    """The checkpoint and state validation are generic over layer kinds: a convolutional
    and a recurrent run stopped at step 3 and resumed end where an uninterrupted run ends."""
    base = ["train", "--arch", arch, "--task", "classification", "--optimizer", "kfac",
            "--batch-size", "64", "--checkpoint-every", "2", "--no-progress", "--format", "jsonl"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    for argv in (base + ["--steps", "6", "--out", full], base + ["--steps", "3", "--out", part],
                 base + ["--steps", "6", "--out", part, "--resume"]):
        code, err = fuzzing.run_cli_in_process(argv)
        assert code == 0, err
    assert fuzzing.same_final_state(fuzzing.final_state(part), fuzzing.final_state(full))
    # negative control: resumed with another architecture, the checkpoint is refused
    other = [a if a != arch else arch.replace("2k3", "3k3").replace("rnn6", "rnn5") for a in base]
    code, err = fuzzing.run_cli_in_process(other + ["--steps", "8", "--out", part, "--resume"])
    assert code == 2 and "checkpoint" in err
