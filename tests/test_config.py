import json

import pytest

from predrnn.config import (
    PRESETS,
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    load_config,
    moving_mnist_v2,
    preset,
)


def test_presets_hold_the_authors_recipes():
    v2 = moving_mnist_v2()
    assert v2.model.num_hidden == (128,) * 4 and v2.model.patch_size == 4 and v2.model.filter_size == 5
    assert (v2.optim.lr, v2.optim.batch_size, v2.optim.max_iterations) == (1e-4, 8, 80_000)
    assert (v2.sampling.r_sampling_step_1, v2.sampling.r_sampling_step_2, v2.sampling.r_exp_alpha) == (
        25_000, 50_000, 2_500.0)
    assert v2.optim.decouple_beta == 0.1 and v2.optim.reverse_input and not v2.model.layer_norm
    v1 = preset("moving_mnist_v1")
    assert v1.model.arch == "predrnn" and v1.sampling.scheme == "ss" and v1.optim.lr == 3e-4
    kth = preset("kth_v2")
    assert kth.data.img_height == 128 and kth.optim.batch_size == 4 and kth.optim.decouple_beta == 0.01
    assert kth.sampling.r_sampling_step_1 == 5_000 and kth.sampling.r_exp_alpha == 2_000
    for name in PRESETS:
        preset(name).validate()


def test_override_parses_and_type_checks():
    cfg = apply_overrides(preset("quick"), ["model.num_hidden=[64,64,64,64]", "optim.lr=1e-3",
                                            "model.layer_norm=true", "sampling.rss_curve=sigmoid",
                                            "optim.decouple_beta=1"])
    assert cfg.model.num_hidden == (64,) * 4 and cfg.model.layer_norm is True
    assert cfg.optim.decouple_beta == 1.0 and isinstance(cfg.optim.decouple_beta, float)
    assert cfg.sampling.rss_curve == "sigmoid"


@pytest.mark.parametrize(("item", "message"), [
    ("model.num_hidden=64", "model.num_hidden: expected list[int], got 64"),
    ("model.num_hidden=[64,\"a\"]", "model.num_hidden[1]: expected int"),
    ("model.layer_norm=1", "model.layer_norm: expected bool"),
    ("sampling.rss_curve=cubic", "expected one of 'exp', 'linear', 'sigmoid'"),
    ("model.nope=1", "unknown config key 'model.nope'"),
    ("nosection.lr=1", "unknown config section 'nosection'"),
    ("optim.lr", "must look like section.field=value"),
])
def test_bad_overrides_name_the_problem(item, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        apply_overrides(preset("quick"), [item])


@pytest.mark.parametrize(("item", "message"), [
    ("sampling.r_sampling_step_1=60000", "r_sampling_step_1 < r_sampling_step_2"),
    ("model.patch_size=5", "divisible by model.patch_size"),
    ("data.input_length=20", "input_length < data.total_length"),
    ("model.num_hidden=[32,16]", "share one width"),
])
def test_contradictions_are_refused(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quick", overrides=[item])


def test_unknown_preset_and_json_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        preset("nope")
    cfg = apply_overrides(preset("quick"), ["model.num_hidden=[16,16]"])
    f = tmp_path / "c.json"
    f.write_text(cfg.to_json())
    assert load_config(config_file=str(f)) == cfg
    bad = json.loads(cfg.to_json())
    bad["optim"]["lr"] = "fast"
    with pytest.raises(ConfigError, match="optim.lr: expected float"):
        ExperimentConfig.from_dict(bad)
