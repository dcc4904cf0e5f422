"""Multi-view test: per-video averaged logits in bounded chunks, and hand-computed metrics."""

import numpy as np
import pytest

from vjax.data.transforms import InputOptions, make_view_iterator
from vjax.evaluate.metrics import average_precision, classification_metrics
from vjax.evaluate.scoring import video_scores

# Each view carries the logits a fake model reads off it (7 classes).
VIDEOS = [
    (0, [[9, 1, 0, 0, 0, 0, 0], [1, 5, 0, 0, 0, 0, 0]]),  # mean (5, 3, 0..): right
    (1, [[0, 2, 4, 0, 0, 0, 0], [0, 2, 4, 0, 0, 0, 0], [6, 2, 0, 0, 0, 0, 0]]),  # (2, 2, 2.67)
    (1, [[1, 3, 2, 0, 0, 0, 0]]),  # right
    (2, [[3, 0, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0]]),  # (2, 0, 1): class 2 second
    (6, [[1, 1, 1, 1, 1, 1, 0]]),  # class 6 last: outside the top 5
]


def _examples():
    for label, views in VIDEOS:
        yield {
            "label": label,
            "views": [np.asarray(v, np.uint8)[None, None, :, None] for v in views],
        }


def _fake_model(seen):
    def apply(batch):
        seen.append(batch.shape[0])
        return batch[:, 0, 0, :, 0].astype(np.float32)

    return apply


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_scores_are_per_video_view_means_whatever_the_chunk(chunk):
    seen = []
    scores, labels = video_scores(_fake_model(seen), _examples(), lambda e: iter(e["views"]), chunk)
    assert set(seen) == {chunk}  # one shape for every call
    assert len(seen) == -(-9 // chunk)  # 9 views in all
    np.testing.assert_allclose(scores[0, :2], [5, 3])
    np.testing.assert_allclose(scores[1, :3], [2, 2, 8 / 3], rtol=1e-6)
    np.testing.assert_array_equal(labels, [0, 1, 1, 2, 6])


def test_single_label_metrics_by_hand():
    scores, labels = video_scores(_fake_model([]), _examples(), lambda e: iter(e["views"]), 4)
    m = classification_metrics(scores, labels)
    assert m["top1"] == pytest.approx(2 / 5)  # videos 0 and 2
    assert m["top5"] == pytest.approx(4 / 5)  # all but video 4
    # classes present: 0 -> 1/1, 1 -> 1/2, 2 -> 0/1, 6 -> 0/1
    assert m["mean_class_accuracy"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)


def test_multilabel_map_by_hand():
    scores = np.array([[0.9, 0.2, -1], [0.8, 0.7, -1], [0.3, 0.6, -1], [0.1, 0.4, -1]])
    labels = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]])
    # class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: rank 3 -> 1/3;
    # class 2 has no positive and is left out of the mean.
    assert average_precision(scores[:, 0], labels[:, 0]) == pytest.approx(5 / 6)
    m = classification_metrics(scores, labels)
    assert m["mAP"] == pytest.approx((5 / 6 + 1 / 3) / 2)
    assert m["top1"] == pytest.approx(0.5)  # videos 0 and 3 have their top class positive


def test_real_views_memory_stays_bounded():
    frames = [np.full((8, 12, 3), 10 * t, np.uint8) for t in range(20)]
    examples = [{"frames": frames, "label": 0}] * 2
    options = InputOptions(num_frames=4, frame_stride=1, crop_size=8, test_num_clips=5,
                           test_num_crops=3)  # fmt: skip
    views = make_view_iterator(options)
    seen = []

    def apply(batch):
        seen.append(batch.shape)
        return batch.mean(axis=(1, 2, 3))  # (B, 3): mean grey of each view

    scores, _ = video_scores(apply, examples, views, 4)
    assert set(seen) == {(4, 4, 8, 8, 3)} and len(seen) == 8  # 30 views in chunks of 4
    # Clip starts 0, 4, 8, 12, 16 (span 4 of 20): mean frame index 1.5 + 8 = 9.5 -> grey 95.
    np.testing.assert_allclose(scores, 95.0, atol=0.01)


def test_evaluate_views_on_a_source_with_config_views():
    from vjax.data.loaders import views_and_label
    from vjax.evaluate.scoring import evaluate_views

    class Source:
        def __len__(self):
            return 3

        def __getitem__(self, i):  # video i: all frames grey 50 * i + t
            frames = [np.full((8, 12, 3), 50 * i + t, np.uint8) for t in range(10)]
            return {"frames": frames, "label": i}

    def apply(batch):  # class = nearest of 3 grey levels (0, 50, 100) to the view's mean
        grey = batch.mean(axis=(1, 2, 3, 4))
        return -np.abs(grey[:, None] - np.array([0.0, 50.0, 100.0])[None])

    config_input = {"global_batch_size": 4, "num_frames": 2, "crop_size": 8, "test_num_clips": 2}
    m = evaluate_views(apply, Source(), config_input, chunk_size=3)
    assert m["num_videos"] == 3 and m["top1"] == 1.0 and m["mean_class_accuracy"] == 1.0

    # Two processes: videos 0, 2 and 1 (+ a masked pad); the gathered result is the same.
    parts = {}

    def gather_from(p):
        def gather(local):
            parts[p] = local
            return local

        return gather

    calls = {0: 0, 1: 0}

    def counting(p):
        def run(batch):
            calls[p] += 1
            return apply(batch)

        return run

    for p in range(2):
        evaluate_views(counting(p), Source(), config_input, 3, p, 2, gather_from(p))
    assert calls[0] == calls[1]  # the same number of collective calls
    np.testing.assert_array_equal(parts[0][1], [0, 2])
    assert parts[1][2].tolist() == [True, False]
    decoded_here = {p: [np.copy(x) for x in part] for p, part in parts.items()}
    for p in range(2):  # the views decoded elsewhere (as loader processes do): the same parts
        video_views = views_and_label(Source(), config_input, (), p, 2)
        evaluate_views(apply, Source(), config_input, 3, p, 2, gather_from(p), (), video_views)
        for got, want in zip(parts[p], decoded_here[p], strict=True):
            np.testing.assert_array_equal(got, want)
    scores = np.concatenate([parts[0][0], parts[1][0]])
    labels = np.concatenate([parts[0][1], parts[1][1]])
    valid = np.concatenate([parts[0][2], parts[1][2]])
    whole = classification_metrics(scores[valid], labels[valid])
    assert whole["num_videos"] == 3 and whole["top1"] == m["top1"]
    # Process 0's result with process 1's parts gathered after its own: in the split's order.
    gathered = lambda local: [np.concatenate(x) for x in zip(local, parts[1], strict=True)]  # noqa: E731
    together = evaluate_views(apply, Source(), config_input, 3, 0, 2, gathered)
    assert together["per_video"]["label"] == [0, 1, 2] == m["per_video"]["label"]


def test_video_scores_max_ensemble_is_elementwise_max_of_views():
    from vjax.evaluate.scoring import video_scores

    rng = np.random.default_rng(0)
    views = [rng.normal(size=(n, 4)).astype(np.float32) for n in (3, 1, 2)]
    examples = [
        {"label": i, "views": [v[None, None, :, None] for v in vs]} for i, vs in enumerate(views)
    ]
    apply = lambda b: b[:, 0, 0, :, 0]  # noqa: E731
    for chunk in (1, 2, 5):
        scores, _ = video_scores(apply, examples, lambda e: iter(e["views"]), chunk, ensemble="max")
        np.testing.assert_allclose(scores, np.stack([v.max(0) for v in views]))
