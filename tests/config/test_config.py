from pathlib import Path

import pytest

from sifthinker.config.run_config import RunConfig, describe_fields
from sifthinker.config.schema import ConfigError

RECIPES = sorted(Path(__file__).resolve().parents[2].joinpath("recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_and_round_trips(path):
    cfg = RunConfig.load(path)
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"recipe\.sft: unknown key\(s\) \['epoch'\]"):
        RunConfig.from_dict({"sft": {"epoch": 3}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"recipe\.data\.num_train: expected an integer"):
        RunConfig.from_dict({"data": {"num_train": "many"}})
    with pytest.raises(ConfigError, match=r"recipe\.platform\.gpu\.tolerations\[0\]"):
        RunConfig.from_dict({"platform": {"gpu": {"tolerations": [{"operator": "Exists"}]}}})


def test_scientific_notation_from_yaml_is_a_float():
    assert RunConfig.from_dict({"sft": {"learning_rate": "1e-4"}}).sft.learning_rate == 1e-4


def test_optional_nested_section():
    cfg = RunConfig.from_dict({"sft": {"lora": {"r": 8, "alpha": 16}}})
    assert cfg.sft.lora is not None and cfg.sft.lora.r == 8
    assert RunConfig().sft.lora is None


def test_paths_resolve_against_work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SIFTHINKER_WORK_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = RunConfig()
    assert cfg.path("models") == tmp_path / "models"
    assert cfg.path("/abs/x") == Path("/abs/x")
    assert cfg.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        RunConfig.load(tmp_path / "nope.yaml")


def test_missing_recipe_message_kept_and_directory_or_unreadable_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=f"recipe {tmp_path} is not a file"):
        RunConfig.load(tmp_path)
    binary = tmp_path / "r.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read recipe .*r.yaml"):
        RunConfig.load(binary)


# ---- malformed YAML ---------------------------------------------------------------------------------


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndata:\n  num_train: [1, 2\n  seed: 0\n")
    with pytest.raises(ConfigError) as err:
        RunConfig.load(p)
    assert str(err.value) == f"{p}:4:7: invalid YAML: expected ',' or ']', but got ':'"
    p.write_text("name: x\n  data: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2:7: invalid YAML: mapping values are not allowed here$"):
        RunConfig.load(p)


def test_duplicate_yaml_key_is_an_error_not_a_silent_override(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("grpo:\n  epochs: 1\ndata:\n  seed: 0\ngrpo:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml:5:1: invalid YAML: duplicate key 'grpo'"):
        RunConfig.load(p)


# ---- value rules: every message names the key path ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # counts and sizes
        ({"data": {"num_train": -5}}, "recipe.data.num_train: must be >= 1, got -5"),
        ({"data": {"num_eval": 0}}, "recipe.data.num_eval: must be >= 1, got 0"),
        ({"data": {"width": 31}}, "recipe.data.width: must be >= 32, got 31"),
        ({"data": {"height": 8}}, "recipe.data.height: must be >= 32, got 8"),
        ({"data": {"seed": -1}}, "recipe.data.seed: must be >= 0, got -1"),
        ({"sft": {"per_device_batch_size": 0}}, "recipe.sft.per_device_batch_size: must be >= 1, got 0"),
        ({"sft": {"max_length": 0}}, "recipe.sft.max_length: must be >= 1, got 0"),
        ({"grpo": {"num_generations": 1}}, "recipe.grpo.num_generations: must be >= 2, got 1"),
        ({"grpo": {"max_completion_length": 0}}, "recipe.grpo.max_completion_length: must be >= 1, got 0"),
        ({"grpo": {"gradient_accumulation_steps": 0}}, "recipe.grpo.gradient_accumulation_steps: must be >= 1"),
        ({"eval": {"batch_size": 0}}, "recipe.eval.batch_size: must be >= 1, got 0"),
        ({"eval": {"num_render": -1}}, "recipe.eval.num_render: must be >= 0, got -1"),
        ({"model": {"tiny": {"num_heads": 0}}}, "recipe.model.tiny.num_heads: must be >= 1, got 0"),
        ({"model": {"min_pixels": 5000, "max_pixels": 4000}},
         r"recipe.model.max_pixels: must be >= model.min_pixels \(5000\), got 4000"),
        # epochs, learning rates, probabilities, tolerances
        ({"sft": {"epochs": 0}}, "recipe.sft.epochs: must be > 0, got 0.0"),
        ({"grpo": {"epochs": -1}}, "recipe.grpo.epochs: must be > 0, got -1.0"),
        ({"sft": {"learning_rate": "-1e-4"}}, "recipe.sft.learning_rate: must be > 0, got -0.0001"),
        ({"grpo": {"learning_rate": 0}}, "recipe.grpo.learning_rate: must be > 0, got 0.0"),
        ({"sft": {"warmup_ratio": 1.5}}, "recipe.sft.warmup_ratio: must be <= 1, got 1.5"),
        ({"data": {"balance_tolerance": 0}}, "recipe.data.balance_tolerance: must be > 0, got 0.0"),
        ({"data": {"balance_tolerance": 1}}, "recipe.data.balance_tolerance: must be < 1, got 1.0"),
        ({"grpo": {"temperature": 0}}, "recipe.grpo.temperature: must be > 0, got 0.0"),
        ({"grpo": {"beta": -0.01}}, "recipe.grpo.beta: must be >= 0, got -0.01"),
        ({"grpo": {"lora": {"dropout": 1.0}}}, "recipe.grpo.lora.dropout: must be < 1, got 1.0"),
        ({"sft": {"lora": {"r": 0}}}, "recipe.sft.lora.r: must be >= 1, got 0"),
        ({"sft": {"epochs": float("nan")}}, "recipe.sft.epochs: must be a finite number, got nan"),
        # max_steps: -1 or >= 1
        ({"grpo": {"max_steps": 0}}, r"recipe.grpo.max_steps: must be >= 1 \(or -1\), got 0"),
        ({"grpo": {"max_steps": -2}}, r"recipe.grpo.max_steps: must be >= 1 \(or -1\), got -2"),
        # reward weights
        ({"grpo": {"reward_weights": {"fromat": 1.0}}},
         r"recipe.grpo.reward_weights: unknown key\(s\) \['fromat'\]; allowed: \['format', 'answer', 'box', 'depth'\]"),
        ({"grpo": {"reward_weights": {"box": -1}}}, "recipe.grpo.reward_weights.box: must be >= 0, got -1.0"),
        ({"grpo": {"reward_weights": {"box": 0, "depth": 0}}},
         "recipe.grpo.reward_weights: at least one value must be > 0"),
        # gate thresholds: any metric, but a number that can be compared
        ({"gate": {"thresholds": {"accuracy": float("inf")}}}, "recipe.gate.thresholds.accuracy: must be a finite number"),
        # strings and choices
        ({"data": {"source": ""}}, "recipe.data.source: must not be empty"),
        ({"data": {"source": "  "}}, "recipe.data.source: must not be empty"),
        ({"model": {"torch_dtype": "fp8"}},
         r"recipe.model.torch_dtype: must be one of \['float32', 'bfloat16', 'float16', 'auto'\], got 'fp8'"),
        ({"sft": {"lora": {"target_modules": []}}}, "recipe.sft.lora.target_modules: must not be empty"),
        ({"serving": {"port": 0}}, "recipe.serving.port: must be >= 1, got 0"),
        ({"serving": {"port": 70000}}, "recipe.serving.port: must be <= 65535, got 70000"),
        ({"serving": {"name": "Sif_Thinker"}}, "recipe.serving.name: must be a DNS-1035 label"),
        ({"serving": {"namespace": "-x"}}, "recipe.serving.namespace: must be a DNS-1123 label"),
        ({"platform": {"gpu": {"tolerations": [{"key": "k"}, {"key": "g", "operator": "Equals"}]}}},
         r"recipe.platform.gpu.tolerations\[1\].operator: must be one of \['Equal', 'Exists'\], got 'Equals'"),
        ({"platform": {"gpu": {"shm_size": "16GB"}}}, "recipe.platform.gpu.shm_size: must be a Kubernetes quantity"),
        ({"platform": {"secrets": [{"secret": "s", "env": {"token": "HF-TOKEN"}}]}},
         r"recipe.platform.secrets\[0\].env.token: must be an environment variable name, got 'HF-TOKEN'"),
    ],
)
def test_value_rules_name_the_key_path(data, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(data)


def test_rule_boundaries_are_accepted():
    cfg = RunConfig.from_dict({
        "data": {"num_train": 1, "width": 32, "height": 32, "balance_tolerance": 0.999},
        "grpo": {"num_generations": 2, "max_steps": -1, "beta": 0, "temperature": 0.01,
                 "reward_weights": {"format": 1, "box": 0}, "lora": {"dropout": 0.0}},
        "sft": {"warmup_ratio": 0, "epochs": 0.5},
        "model": {"min_pixels": 100, "max_pixels": 100, "torch_dtype": "auto"},
        "serving": {"port": 65535, "name": "a"},
        "platform": {"gpu": {"shm_size": "500m", "tolerations": [{"key": "k", "operator": "Exists"}]}},
        "gate": {"thresholds": {"loss": -3.5}},
    })
    assert cfg.grpo.reward_weights == {"format": 1.0, "box": 0.0} and cfg.grpo.max_steps == -1
    assert RunConfig.from_dict({"grpo": {"max_steps": 1}}).grpo.max_steps == 1


def test_a_malformed_recipe_file_fails_at_load_with_the_key_path(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("data: {num_train: -5}\n")
    with pytest.raises(ConfigError, match=r"^recipe\.data\.num_train: must be >= 1, got -5$"):
        RunConfig.load(p)


def test_a_recipe_with_several_mistakes_reports_all_of_them_at_once(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("colour: red\nsft: {learning_rate: -1, epochs: many, bogus: 1}\n"
                 "eval: {max_new_tokens: 0}\ndata: {sources: [{source: synthetic, share: -1}, {share: x}]}\n")
    with pytest.raises(ConfigError) as e:
        RunConfig.load(p)
    wanted = ["recipe: unknown key(s) ['colour']", "recipe.sft: unknown key(s) ['bogus']",
              "recipe.sft.epochs: expected a number, got 'many'", "recipe.sft.learning_rate: must be > 0, got -1.0",
              "recipe.eval.max_new_tokens: must be >= 1, got 0"]
    for w in wanted:
        assert sum(x.startswith(w) for x in e.value.problems) == 1, (w, e.value.problems)
    assert any(x.startswith("recipe.data.sources[0]") for x in e.value.problems)
    assert any(x.startswith("recipe.data.sources[1]") for x in e.value.problems)
    assert str(e.value).startswith(f"{len(e.value.problems)} problems: recipe: unknown key(s) ['colour']")


def test_validate_checks_a_config_changed_in_code():
    cfg = RunConfig()
    assert cfg.validate() is cfg
    cfg.grpo.num_generations = 1
    with pytest.raises(ConfigError, match="recipe.grpo.num_generations: must be >= 2, got 1"):
        cfg.validate()


def test_reward_weight_defaults_come_from_the_reward_names():
    from sifthinker.names import REWARDS

    assert RunConfig().grpo.reward_weights == {"format": 1.0, "answer": 1.0, "box": 1.0, "depth": 1.0}
    assert tuple(RunConfig().grpo.reward_weights) == REWARDS


# ---- documentation ----------------------------------------------------------------------------------


def test_every_field_is_described_with_help():
    docs = list(describe_fields())
    by_path = {d.path: d for d in docs}
    assert len(by_path) == len(docs)  # each key path once
    assert [d.path for d in docs if not d.help.strip()] == []
    assert by_path["data.num_train"] == ("data.num_train", "int", 160, "Records in the train split.")
    assert by_path["grpo.lora.dropout"].type == "float" and by_path["sft.lora"].type == "LoraConfig | None"
    assert by_path["platform.gpu.tolerations[].operator"].default == "Equal"
    # Every leaf key of a full config appears, so nothing can be added without help text.
    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("reward_weights", "thresholds", "vs_champion", "node_selector", "env"):
                yield from leaves(v, f"{prefix}{k}.")
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                yield from (leaf for item in v for leaf in leaves(item, f"{prefix}{k}[]."))
            else:
                yield f"{prefix}{k}"

    full = RunConfig.load(RECIPES[0].parent / "qwen2.5-vl-7b-rebuild-sif50k.yaml").to_dict()  # LoRA, tolerations, secrets set
    full["sft"]["lora"] = full["grpo"]["lora"]
    assert {"platform.gpu.tolerations[].key", "platform.secrets[].env", "sft.lora.r"} <= set(leaves(full))
    assert set(leaves(full)) - set(by_path) == set()
