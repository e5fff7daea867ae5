import math

from hypothesis import given
from hypothesis import strategies as st

from mmlm_stream.operators.frame_sampler import FrameSampler, output_size


def test_one_frame_per_second_from_25fps():
    sampler = FrameSampler(1.0)
    picked = [i / 25 for i in range(250) if sampler.wants(i / 25)]
    assert picked == [float(s) for s in range(10)]


def test_zero_fps_keeps_every_frame():
    sampler = FrameSampler(0)
    assert all(sampler.wants(t / 10) for t in range(20))


@given(
    st.lists(st.floats(min_value=0.001, max_value=0.2), min_size=5, max_size=300),
    st.sampled_from([0.5, 1.0, 2.0, 5.0]),
)
def test_variable_frame_rate_picks_the_first_frame_at_each_grid_time(gaps, fps):
    times = [sum(gaps[:i]) for i in range(len(gaps))]
    sampler = FrameSampler(fps)
    picked = [i for i, t in enumerate(times) if sampler.wants(t)]
    slots = [math.floor(times[i] * fps + 1e-6) for i in picked]
    assert len(set(slots)) == len(slots)
    for i, slot in zip(picked[1:], slots[1:], strict=True):
        assert times[i - 1] < slot / fps + 1e-6 <= times[i] + 2e-6
    for k in range(math.floor(times[-1] * fps) + 1):
        assert any(0 <= times[i] - k / fps + 1e-6 < max(gaps) + 1e-6 for i in picked)


def test_downscale_keeps_aspect_and_never_upscales():
    assert output_size(3840, 2160, 256, None) == (455, 256)
    assert output_size(641, 361, 256, None) == (455, 256)
    assert output_size(320, 240, 256, None) == (320, 240)
    assert output_size(3840, 2160, 256, (224, 224)) == (224, 224)
