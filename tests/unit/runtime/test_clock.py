import time

import pytest

from qnemu.runtime import EmulatedClock


def test_emulated_time_is_wall_time_over_scale():
    epoch = time.time() - 10.0
    assert EmulatedClock(epoch, 1.0).now() == pytest.approx(10.0, abs=0.05)
    assert EmulatedClock(epoch, 10.0).now() == pytest.approx(1.0, abs=0.01)
    assert EmulatedClock(epoch, 10.0).wall_delay_s(0.5) == pytest.approx(5.0)
    assert EmulatedClock(epoch, 2.0).wall_delay_s(-1.0) == 0.0


def test_time_scale_must_be_positive():
    with pytest.raises(ValueError):
        EmulatedClock(0.0, 0.0)
