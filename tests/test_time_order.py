import numpy as np

from mmlm_stream.operators.time_order import TimeOrderer
from mmlm_stream.records.channels import AudioChunk, Frame


def _frame(t: float) -> Frame:
    return Frame("s", t, np.zeros((2, 2, 3), np.uint8))


def test_items_wait_for_the_watermark_and_leave_in_time_order():
    order = TimeOrderer()
    order.push([_frame(1.5), _frame(0.5)])
    assert [i.sort_time for i in order.pop_ready(0.4)] == []
    order.push([AudioChunk("s", 0.0, np.zeros(16000, np.float32))])
    assert [i.sort_time for i in order.pop_ready(1.0)] == [0.0, 0.5]
    assert [i.sort_time for i in order.drain()] == [1.5]


def test_limit_bounds_the_buffer_even_without_progress():
    order = TimeOrderer(limit=3)
    order.push([_frame(float(t)) for t in range(10)])
    released = order.pop_ready(-1.0)
    assert len(order) == 3
    assert [i.sort_time for i in released] == [float(t) for t in range(7)]
