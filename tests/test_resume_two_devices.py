"""kill -9 at random moments of stack, denoise train and describe train on two devices, then `--resume`:
the final weights equal, bit for bit, those of an uninterrupted two-device run (the procedure is
`test_resume.kill_and_compare`; this file is apart so that `--dist loadfile` gives it its own worker).

The full proof only, with `DEEPRESTORE_KILLS` set (`tests/test_distribute.py` resumes a two-device run
in the default suite).
"""

import os

import pytest
from test_resume import CASES, kill_and_compare

pytestmark = pytest.mark.skipif("DEEPRESTORE_KILLS" not in os.environ,
                                reason="the full proof only: set DEEPRESTORE_KILLS")


# Stack's batches hold one array as an input and a target; `training.separate_arrays` keeps that from
# corrupting the two-device step (tests/test_distribute.py checks that cause directly).
@pytest.mark.parametrize("case", list(CASES))
def test_kill_9_at_random_moments_on_two_devices_then_resume_equals_an_uninterrupted_run(tmp_path, case):
    kill_and_compare(tmp_path, case, devices=2)
