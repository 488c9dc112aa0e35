import numpy as np

from tools.tracking import Tracker, iou_matrix


def box(cx, cy, s=100):
    return [cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2]


def test_iou_matrix_basic_values():
    a = np.array([box(50, 50)])
    b = np.array([box(50, 50), box(100, 50), box(500, 500)])
    np.testing.assert_allclose(iou_matrix(a, b)[0], [1.0, 1 / 3, 0.0], atol=1e-9)


def test_ids_follow_faces_when_detector_order_swaps():
    t = Tracker()
    ids0 = t.update(np.array([box(100, 100), box(400, 100)]), 0.0)
    # Same faces, moved a little, reported in the other order.
    ids1 = t.update(np.array([box(405, 102), box(103, 98)]), 0.04)
    assert ids0 == [1, 2] and ids1 == [2, 1]


def test_short_gap_is_bridged_and_long_gap_starts_a_new_id():
    t = Tracker(max_gap_s=1.0)
    assert t.update(np.array([box(100, 100)]), 0.0) == [1]
    assert t.update(np.zeros((0, 4)), 0.5) == []
    assert t.update(np.array([box(110, 100)]), 0.9) == [1]  # back within the gap
    assert t.update(np.array([box(110, 100)]), 3.0) == [2]  # gone too long: a new id


def test_ids_are_never_reused_and_far_faces_do_not_match():
    t = Tracker()
    assert t.update(np.array([box(100, 100)]), 0.0) == [1]
    # A face far away in the next frame is someone else.
    assert t.update(np.array([box(600, 400)]), 0.04) == [2]
    seen = set()
    for k in range(20):
        seen.update(t.update(np.array([box(100 + 400 * (k % 2), 100)]), 5.0 + k * 2.0))
    assert len(seen) == 20 and min(seen) > 2


def test_pose_closed_form_matches_scipy():
    from scipy.spatial.transform import Rotation

    from tools.landmarks import pose_from_transform

    rng = np.random.default_rng(0)
    for angles in rng.uniform([-60, -80, -45], [60, 80, 45], size=(50, 3)):
        m = np.eye(4)
        m[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
        np.testing.assert_allclose(pose_from_transform(m), angles, atol=1e-6)
