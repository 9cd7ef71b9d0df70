"""`difflab average`: weighted averages of checkpoints of one network (model soups)."""

import json

import pytest
import torch
from safetensors import safe_open

from difflab.cli import main
from difflab.distill.student import ConsistencyLevels
from difflab.errors import DifflabError
from difflab.train.average import average_checkpoints, member_weights
from difflab.train.checkpoint import load_denoiser, rewrite_config
from difflab.train.config import ExperimentConfig
from tiny_models import TINY_UNET, write_random_model

CONFIG = {"network": TINY_UNET, "train": {"batch": 4}}


def params(path):
    return {k: v.clone() for k, v in load_denoiser(path)[0].net.state_dict().items()}


@pytest.fixture
def members(tmp_path):
    return [write_random_model(tmp_path / f"m{i}" / "model.safetensors", {**CONFIG, "train": {"batch": 4, "seed": i}},
                               seed=i) for i in range(3)]


def test_the_average_is_the_weighted_mean_of_every_weight(members, tmp_path):
    out = tmp_path / "soup" / "model.safetensors"
    assert average_checkpoints(members, out, [1, 1, 2]) == [0.25, 0.25, 0.5]
    a, b, c = (params(p) for p in members)
    soup = params(out)
    assert soup.keys() == a.keys()
    for k in soup:
        torch.testing.assert_close(soup[k], 0.25 * a[k] + 0.25 * b[k] + 0.5 * c[k], rtol=0, atol=1e-7)
    assert not all(torch.equal(soup[k], a[k]) for k in soup)  # the members differ, so the soup is none of them


def test_averaging_copies_of_one_checkpoint_gives_it_back_bit_for_bit(members, tmp_path):
    out = tmp_path / "same.safetensors"
    average_checkpoints([members[0]] * 3, out, [0.2, 0.3, 0.5])
    first, soup = params(members[0]), params(out)
    assert all(torch.equal(soup[k], first[k]) for k in first)


def test_the_members_and_their_weights_are_recorded(members, tmp_path):
    out = tmp_path / "soup.safetensors"
    main(["average", *map(str, members[:2]), "--out", str(out)])
    with safe_open(out, "pt") as f:
        recorded = json.loads(f.metadata()["averaged_from"])
    assert [m["path"] for m in recorded] == [str(p.resolve()) for p in members[:2]]
    assert [m["weight"] for m in recorded] == [0.5, 0.5] and all(len(m["sha256"]) == 64 for m in recorded)


def test_members_may_differ_in_recipe_but_not_in_the_function_their_weights_stand_for(members, tmp_path):
    wider = write_random_model(tmp_path / "wide.safetensors", {**CONFIG, "network": {**TINY_UNET, "channels": 16}})
    with pytest.raises(DifflabError, match=r"wide.safetensors cannot be averaged with .*m0.*: they differ in network"):
        average_checkpoints([members[0], wider], tmp_path / "x.safetensors")
    v = write_random_model(tmp_path / "v.safetensors", {**CONFIG, "prediction": "v"})
    with pytest.raises(DifflabError, match="they differ in prediction"):
        average_checkpoints([members[0], v], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(DifflabError, match="is one of the checkpoints averaged"):
        average_checkpoints(members[:2], members[1])


def test_a_consistency_soup_keeps_the_training_levels_and_drops_the_chosen_ones(members, tmp_path):
    spec = {**CONFIG, "precond": {"kind": "consistency", "sigma_data": 0.5, "sigma_min": 0.01, "inner": {"kind": "vp"}},
            "prediction": "v"}
    paths = [write_random_model(tmp_path / f"c{i}.safetensors", spec, seed=i) for i in range(2)]
    for path, renoise in zip(paths, [(1.5,), (0.8,)]):
        config = ExperimentConfig.from_dict(spec)
        rewrite_config(path, ExperimentConfig.from_dict({**config.to_dict(), "consistency_levels": {
            "trained": [80.0, 1.5, 0.8, 0.01], "renoise": list(renoise)}}))
    out = tmp_path / "soup.safetensors"
    average_checkpoints(paths, out)
    assert load_denoiser(out)[1].config.consistency_levels == ConsistencyLevels((80.0, 1.5, 0.8, 0.01))
    rewrite_config(paths[1], ExperimentConfig.from_dict({**ExperimentConfig.from_dict(spec).to_dict(),
                                                         "consistency_levels": {"trained": [80.0, 1.0, 0.01]}}))
    with pytest.raises(DifflabError, match="they differ in consistency_levels"):
        average_checkpoints(paths, out)


@pytest.mark.parametrize("weights, message", [([1.0], "1 weights for 2 checkpoints"), ([1.0, -1.0], ">= 0"),
                                              ([0.0, 0.0], "positive sum"), ([float("nan"), 1.0], ">= 0")])
def test_bad_weights_are_refused(weights, message):
    with pytest.raises(DifflabError, match=message):
        member_weights(2, weights)


def test_the_command_refuses_one_checkpoint_and_unreadable_weights(members, tmp_path, capsys):
    assert main(["average", str(members[0]), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "averaging needs two or more checkpoints, got 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["average", *map(str, members[:2]), "--out", str(tmp_path / "x.safetensors"), "--weights", "1,a"])
    assert "--weights takes numbers separated by commas, got '1,a'" in capsys.readouterr().err
