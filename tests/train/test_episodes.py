import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vcam.data.clips import open_dataset
from vcam.train.episodes import Episodes, Split, pick_frames, split_identities


@given(st.lists(st.text(min_size=1, max_size=6), min_size=2, max_size=40, unique=True),
       st.floats(0.05, 0.5), st.integers(0, 5))
def test_split_is_by_identity_and_reproducible(identities, fraction, seed):
    split = split_identities(identities, fraction, seed)
    assert set(split.train) | set(split.validation) == set(identities)
    assert not set(split.train) & set(split.validation)
    assert len(split.validation) >= 1 and len(split.train) >= 1
    assert split == split_identities(list(reversed(identities)), fraction, seed)
    assert Split.from_dict(split.to_dict()) == split


def test_a_single_identity_is_all_training():
    assert split_identities(["solo"]) == Split(("solo",), ())


@pytest.fixture(scope="module")
def episodes(tiny_dataset):
    return Episodes(open_dataset(tiny_dataset).clips, shots=3, size=64, batch=2, seed=7)


def test_batches_have_the_episode_shapes(episodes):
    batch = episodes.draw(step=0)
    assert batch["frames"].shape == (2, 3, 3, 64, 64)
    assert batch["landmarks"].shape == (2, 3, 3, 64, 64)
    assert batch["target"].shape == batch["target_landmarks"].shape == (2, 3, 64, 64)
    assert batch["video"].shape == (2,) and int(batch["video"].max()) < 3
    for key in ("frames", "target"):
        assert float(batch[key].min()) >= -1.0 and float(batch[key].max()) <= 1.0
    assert float(batch["landmarks"].max()) > 0.9 and float(batch["landmarks"].min()) == -1.0


def test_draws_depend_only_on_seed_step_and_rank(episodes):
    first, again = episodes.draw(5), episodes.draw(5)
    for key in first:
        assert np.array_equal(first[key].numpy(), again[key].numpy())
    other_rank = episodes.draw(5, rank=1)
    other_step = episodes.draw(6)
    assert not all(np.array_equal(first[k].numpy(), other_rank[k].numpy()) for k in first)
    assert not all(np.array_equal(first[k].numpy(), other_step[k].numpy()) for k in first)


def test_shots_exclude_the_target_when_the_clip_allows():
    rng = np.random.default_rng(0)
    for _ in range(50):
        target, shots = pick_frames(10, 8, rng)
        assert target not in shots and len(set(shots)) == 8
    target, shots = pick_frames(3, 8, rng)  # too short: repeats, still not the target
    assert len(shots) == 8 and target not in shots
    assert pick_frames(1, 2, rng) == (0, [0, 0])
