"""The generator's reference scores (data/synthetic/oracle.py), checked by hand on `tiny`."""
from __future__ import annotations

import numpy as np
import pytest

from hyperrec.data.synthetic import attributes, behaviour, catalogue, oracle, scales

SEED = 3
SCALE = scales.get_scale("tiny")
CUTOFF = SCALE.end_ts - 7 * 86400


@pytest.fixture(scope="module")
def world():
    shift = behaviour.draw_shift(SEED, SCALE)
    items = catalogue.build_catalogue(SEED, SCALE, shift.batch_category)
    users = behaviour.build_users(SEED, SCALE)
    return shift, items, users


def test_the_prior_over_tastes_is_the_generators():
    hypotheses = oracle._Hypotheses()
    assert hypotheses.shape == (8 + 28, 8 + 28 + 56, 4, oracle.PRICE_GRID_POINTS, 2)
    prior = np.exp(hypotheses.log_prior).reshape(hypotheses.shape)
    assert prior.sum() == pytest.approx(1.0)
    # one colour: 1/2 x 1/8; two categories: 1/3 x 1/28; any style 1/4; a grid point 1/6;
    # a trend follower 0.6
    assert prior[0, 8, 0, 0, 1] == pytest.approx(
        (0.5 / 8) * (1 / 3 / 28) * 0.25 / oracle.PRICE_GRID_POINTS * 0.6)


def test_oracle_score_is_exposure_times_the_click_probability(world):
    shift, items, users = world
    user, item = users[5], items[7]
    model = behaviour.CHOICE_MODEL
    utility = (model.base + model.colour_match * (item.colour in user.fav_colours)
               + model.category_match * (item.category in user.fav_categories)
               + model.style_match * (item.style == user.fav_style)
               - model.price * user.price_sensitivity
               * (1 + model.mobile_price_extra * (user.primary_device == "mobile")) * item.price_z
               + item.quality
               + model.trend * (user.follows_trend and item.colour == shift.trendy_colour
                                and CUTOFF >= shift.timestamp))
    scores = oracle.oracle_scores(SEED, "tiny", [user.user_id], [item.item_id, items[0].item_id],
                                  CUTOFF, SCALE.end_ts)
    exposure = oracle._World(SEED, "tiny", [item.item_id]).exposure(CUTOFF, SCALE.end_ts)[0]
    assert exposure > 0
    assert scores[0, 0] == pytest.approx(exposure / (1 + np.exp(-utility)))


def test_the_posterior_finds_a_taste_the_impressions_show(world):
    """A user who clicked every shown item of one colour and nothing else: the most probable
    colour set is exactly that colour (another colour in the set would predict clicks that
    never happened)."""
    shift, items, users = world
    liked = attributes.COLOUR_NAMES.index(items[0].colour)
    table = behaviour.ItemTable(items)
    available = table.available(CUTOFF - 1)
    impressions = [(CUTOFF - 86400 - i * 3600, 0, i % available,
                    int(table.colour[i % available] == liked), "desktop") for i in range(300)]
    hypotheses = oracle._Hypotheses()
    log_posterior = hypotheses.log_prior + oracle._log_likelihood(
        oracle._World(SEED, "tiny", [items[0].item_id]), hypotheses, impressions)
    best = np.unravel_index(int(np.argmax(log_posterior)), hypotheses.shape)
    assert hypotheses.colour_sets[best[0]] == (liked,)


def test_without_impressions_the_inferred_scores_are_the_prior_predictive(world):
    """A user with nothing before the cutoff is scored by the prior alone: the same for every
    such user (here the first active moment is moved past the cutoff)."""
    shift, items, users = world
    late = [u for u in users if u.first_active >= CUTOFF]
    if len(late) < 2:
        pytest.skip("tiny seed has fewer than two users who start after the cutoff")
    scores = oracle.inferred_taste_scores(SEED, "tiny", [late[0].user_id, late[1].user_id],
                                          [i.item_id for i in items], CUTOFF, SCALE.end_ts)
    np.testing.assert_allclose(scores[0], scores[1])


def test_inferred_tastes_rank_closer_to_the_oracle_than_the_prior_does(world):
    shift, items, users = world
    active = [u.user_id for u in users if u.first_active <= CUTOFF - 14 * 86400][:12]
    item_ids = [i.item_id for i in items if i.first_seen < SCALE.end_ts]
    truth = oracle.rank(oracle.oracle_scores(SEED, "tiny", active, item_ids, CUTOFF,
                                             SCALE.end_ts))[:, :10]
    inferred = oracle.rank(oracle.inferred_taste_scores(SEED, "tiny", active, item_ids,
                                                        CUTOFF, SCALE.end_ts))[:, :10]
    exposure_only = oracle.rank(oracle._World(SEED, "tiny", item_ids).exposure(
        CUTOFF, SCALE.end_ts)[None, :])[0, :10]
    overlap = np.mean([len(set(t) & set(i)) for t, i in zip(truth, inferred)])
    overlap_without = np.mean([len(set(t) & set(exposure_only)) for t in truth])
    assert len(active) == 12
    print(f"top-10 overlap with the oracle: inferred {overlap:.2f}, exposure alone {overlap_without:.2f}")
    assert overlap > overlap_without, (overlap, overlap_without)
