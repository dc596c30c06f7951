import numpy as np
import pytest

from kvant.runtime.sampling import NonFiniteLogitsError, Sampler, SamplerSettings, min_p, penalize_repeats, top_k, top_p


def test_temperature_zero_is_argmax():
    logits = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    assert Sampler(SamplerSettings(temperature=0))(logits) == 1


def test_top_k_keeps_largest_sorted():
    ids, values = top_k(np.array([1.0, 5.0, 3.0, 4.0, 2.0], np.float32), 3)
    assert ids.tolist() == [1, 3, 2]
    assert values.tolist() == [5.0, 4.0, 3.0]


@pytest.mark.parametrize("k", [1, 2, 40, 999, 1000, 0, 5000])
def test_top_k_equals_a_stable_sort(k):
    # few distinct values, so ties cross the cut: the lower id wins, as in a stable sort of the whole vocabulary
    logits = np.random.default_rng(k).integers(-20, 20, 1000).astype(np.float32)
    logits[[3, 500]] = -np.inf
    order = np.argsort(-logits.astype(np.float64), kind="stable")[:k or None]
    ids, values = top_k(logits, k)
    assert ids.tolist() == order.tolist()
    assert values.dtype == np.float64 and values.tolist() == logits[order].tolist()


def test_top_k_equals_a_stable_sort_on_a_large_vocabulary():
    # blocks of logits below the cut are skipped after counting: the winners sit in a few blocks and the tail
    logits = np.random.default_rng(7).standard_normal(262_144 + 17).astype(np.float32)
    logits[[5000, 5001, 262_150]] = 9.0
    order = np.argsort(-logits.astype(np.float64), kind="stable")[:40]
    assert top_k(logits, 40)[0].tolist() == order.tolist()


@pytest.mark.parametrize("k", [1, 40, 0])
@pytest.mark.parametrize("where", [7, 700, 999])
def test_nan_logits_are_refused(k, where):
    # 700: in a block after the buffer is full where no logit beats the cut (only the NaN makes it walked); 999: tail
    logits = np.zeros(1000, np.float32)
    logits[where] = np.nan
    with pytest.raises(NonFiniteLogitsError):
        Sampler(SamplerSettings(temperature=1.0, top_k=k, seed=0))(logits)


def test_top_p_smallest_prefix_reaching_p():
    ids = np.arange(3)
    logits = np.log(np.array([0.6, 0.3, 0.1]))
    assert top_p(ids, logits, 0.5)[0].tolist() == [0]
    assert top_p(ids, logits, 0.85)[0].tolist() == [0, 1]
    assert top_p(ids, logits, 1.0)[0].tolist() == [0, 1, 2]


def test_min_p_relative_to_best():
    ids = np.arange(3)
    logits = np.log(np.array([0.5, 0.2, 0.01]))
    assert min_p(ids, logits, 0.1)[0].tolist() == [0, 1]


def test_repeat_penalty_divides_positive_multiplies_negative():
    out = penalize_repeats(np.array([2.0, -2.0, 1.0]), [0, 1], 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_same_seed_same_tokens_and_distribution():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=100).astype(np.float32)
    settings = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=42)
    a = [Sampler(settings)(logits) for _ in range(5)]
    s1, s2 = Sampler(settings), Sampler(settings)
    assert [s1(logits) for _ in range(20)] == [s2(logits) for _ in range(20)]
    # with top_k=1 only the best token can come out, whatever the seed
    s = Sampler(SamplerSettings(temperature=1.0, top_k=1, seed=3))
    assert {s(logits) for _ in range(20)} == {int(np.argmax(logits))}
    assert len(a) == 5


def test_sampling_frequencies_follow_softmax():
    logits = np.log(np.array([0.7, 0.2, 0.1], np.float32))
    s = Sampler(SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=0))
    counts = np.bincount([s(logits) for _ in range(4000)], minlength=3) / 4000
    assert np.allclose(counts, [0.7, 0.2, 0.1], atol=0.03)


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(min_p=1.5), dict(top_k=-2)])
def test_bad_settings_rejected(bad):
    with pytest.raises(ValueError):
        SamplerSettings(**bad)
