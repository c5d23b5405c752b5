import torch

import neardup._compat as compat


def brute_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        ok = True
        for j in keep:
            xx1, yy1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            xx2, yy2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, xx2 - xx1) * max(0.0, yy2 - yy1)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            if inter / (area(boxes[i]) + area(boxes[j]) - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def test_torchvision_and_friends_import():
    import lightly  # noqa: F401
    import timm  # noqa: F401
    import torchvision  # noqa: F401

    assert hasattr(torch.ops.torchvision, "nms")


def test_nms_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 50
    wh = torch.rand(60, 2, generator=g) * 20 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(60, generator=g)
    for thr in (0.1, 0.5, 0.8):
        got = torch.ops.torchvision.nms(boxes, scores, thr).tolist()
        assert got == brute_nms(boxes.tolist(), scores.tolist(), thr)
    assert compat.nms_reference(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_does_nothing_when_ops_exist_or_already_patched(monkeypatch):
    # ops are now present (native or ours): a second call must not register anything
    assert compat.ensure_torchvision_ops() is False
    monkeypatch.setattr(compat, "PATCHED", False)
    monkeypatch.setattr(compat, "_native_ops_available", lambda: True)
    assert compat.ensure_torchvision_ops() is False
    assert compat.PATCHED is False
