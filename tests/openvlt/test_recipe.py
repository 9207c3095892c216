"""Recipes: validated before anything runs, overridable, frozen into the run directory."""
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from openvlt.recipe import RecipeError, load_recipe
from openvlt.workspace import Workspace

from ..conftest import REPO, plugin_file

MINIMAL = {
    "name": "unit",
    "data": {"sft": "DATA/train.parquet", "rl": "DATA/train.parquet", "eval": {"held": "DATA/test.parquet"}},
    "roles": {"student": {"engine": "hf", "model": "MODEL"}},
}


def write(tmp_path, toyworld_dir, tiny_student, **changes) -> Path:
    text = yaml.safe_dump({**MINIMAL, **changes}).replace("DATA", str(toyworld_dir)).replace("MODEL", str(tiny_student))
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_greedy_decoding_with_several_samples_is_refused_only_for_engines_that_decode(tmp_path, toyworld_dir, tiny_student):
    """The program teacher writes varied traces whatever the temperature; an hf model at temperature 0 repeats one."""
    roles = {**MINIMAL["roles"], "reasoner": {"engine": "program", "model": "toyworld-reasoner"}}
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, roles=roles, distill={"temperature": 0, "samples": 4}))
    assert recipe.distill.samples == 4
    load_recipe(write(tmp_path, toyworld_dir, tiny_student, distill={"temperature": 0, "samples": 1}))


def test_every_recipe_in_the_repo_loads():
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert recipes, "no recipes found"
    for path in recipes:
        recipe = load_recipe(path, check_paths=False)
        assert recipe.iterations >= 1 and recipe.data.eval, path
        header = path.read_text().splitlines()[:12]
        commands = [line.split("#")[1].split(f"openvlt run recipes/{path.name}")[1] for line in header
                    if f"openvlt run recipes/{path.name}" in line]
        assert commands, f"{path.name}: no launch command in header"
        for command in commands:  # the overrides the header suggests load too
            load_recipe(path, [word for word in command.split() if "=" in word], check_paths=False)


def test_embedded_default_is_fully_offline_and_self_building():
    recipe = load_recipe(REPO / "recipes" / "tiny-cpu.yaml")  # paths exist or are built by `prepare`
    assert recipe.prepare.toyworld is not None and recipe.prepare.tiny_student is not None
    assert recipe.roles.captioner.engine == recipe.roles.reasoner.engine == "program"
    assert recipe.iterations >= 2 and recipe.backend.name == "local"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"itertions": 3}, "unknown recipe key 'itertions'; did you mean 'iterations'?"),
        ({"sft": {"stpes": 3}}, "unknown recipe key 'sft.stpes'; did you mean 'sft.steps'?"),
        ({"roles": {"studnet": {"model": "x"}}}, "did you mean 'roles.student'?"),
        ({"sft": {"steps": "many"}}, "sft.steps: expected int, got str 'many'"),
        ({"grpo": {"lr": [1]}}, "grpo.lr: expected float"),
        ({"regenerate": {"retries": -1}}, "regenerate.retries: must be >= 0, got int -1"),
        ({"per_iteration": {0: {"sft": {"steps": 1}}}}, "per_iteration.0: iterations are numbered from 1"),
        ({"per_iteration": {2: {"evaluate": {"max_problems": 4}}}}, "per_iteration.2.evaluate.max_problems: every checkpoint is "
                                                                    "evaluated the same way"),
        ({"per_iteration": {2: {"roles": {"evaluator": {"prompt": "Q: {question}"}}}}},
         "per_iteration.2.roles.evaluator.prompt: every checkpoint is evaluated the same way"),
        ({"per_iteration": {2: {"sft": {"setps": 1}}}},
         "unknown recipe key 'per_iteration.2.sft.setps'; did you mean 'per_iteration.2.sft.steps'?"),
        ({"per_iteration": {2: {"grpo": {"lr": "fast"}}}}, "per_iteration.2.grpo.lr: expected float, got str 'fast'"),
        ({"grpo": {"temperature": 0}}, "grpo.temperature: must be > 0, got 0.0 (GRPO samples its rollouts"),
        ({"per_iteration": {2: {"grpo": {"temperature": 0.0}}}}, "per_iteration.2.grpo.temperature: must be > 0"),
        # values checked before anything runs, not when their stage starts
        ({"select": {"policy": "shortst"}}, "select.policy: 'shortst' is not one of shortest, longest, first, random; "
                                            "did you mean 'shortest'?"),
        ({"sft": {"schedule": "cosin"}}, "sft.schedule: 'cosin' is not one of cosine, linear, constant; did you mean 'cosine'?"),
        ({"grpo": {"kl_penalty": "k9"}}, "grpo.kl_penalty: 'k9' is not one of low_var_kl, k3"),
        ({"grpo": {"loss_agg_mode": "tokenmean"}}, "did you mean 'token-mean'?"),
        ({"backend": {"name": "verl"}}, "backend.name: 'verl' is not one of local"),
        ({"roles": {"student": {"engine": "hff", "model": "MODEL"}}}, "roles.student.engine: 'hff' is not one of program, hf; "
                                                                      "did you mean 'hf'?"),
        ({"roles": {"student": {"model": "MODEL", "options": {"batchsize": 4}}}},
         "unknown hf engine option 'roles.student.options.batchsize'; did you mean 'roles.student.options.batch_size'?"),
        ({"roles": {"student": {"model": "MODEL"}, "reasoner": {"engine": "program", "model": "toyworld-reasonr"}}},
         "roles.reasoner.model: unknown program model 'toyworld-reasonr'"),
        ({"roles": {"student": {"model": "MODEL"}, "captioner": {"engine": "program", "model": "toyworld-captioner",
                                                               "options": {"miss": 0.1}}}},
         "unknown program engine option 'roles.captioner.options.miss'; did you mean 'roles.captioner.options.miss_rate'?"),
        ({"backend": {"options": {"devcie": "cpu"}}}, "unknown local backend option 'backend.options.devcie'; "
                                                      "did you mean 'backend.options.device'?"),
        ({"backend": {"options": {"autocast": "bf16"}}}, "backend.options.autocast: must be one of none, bfloat16, got 'bf16'"),
        ({"per_iteration": {2: {"backend": {"options": {"dtype": "fp16"}}}}},
         "per_iteration.2.backend.options.dtype: must be one of float32, got 'fp16'"),
        ({"prepare": {"toyworld": {"n_trian": 5}}}, "unknown recipe key 'prepare.toyworld.n_trian'; did you mean 'prepare.toyworld.n_train'?"),
        ({"distill": {"samples": 0}}, "distill.samples: must be >= 1, got 0"),
        ({"select": {"reflection_markers": ["Wait,", " "]}}, "select.reflection_markers: ' ' is not a marker (an empty or blank"),
        ({"distill": {"temperature": 0}}, "distill.temperature: distill.temperature 0 decodes greedily, so distill.samples=4 "
                                          "would only repeat one reasoner's answer"),
        ({"distill": {"temperature": -0.5}}, "distill.temperature: must be >= 0, got -0.5"),  # (not "decodes greedily")
        ({"per_iteration": {2: {"regenerate": {"temperature": 0, "samples": 1, "retries": 2}}}},
         "per_iteration.2.regenerate.temperature: regenerate.temperature 0 decodes greedily, so regenerate.retries=2 would"),
        ({"per_iteration": {2: {"sft": {"batch_size": 0}}}}, "per_iteration.2.sft.batch_size: must be >= 1, got 0"),
        ({"grpo": {"rollouts": 1}}, "grpo.rollouts: GRPO compares rollouts within a group: at least 2, got 1"),
        ({"reward": {"workers": 0}}, "reward.workers: must be >= 1, got 0 (the loop judges in worker processes"),
        ({"iterations": 0}, "iterations: must be >= 1, got 0"),
        ({"reward": {"timeout": 0}}, "reward.timeout: must be > 0, got 0.0 (seconds per reward call)"),
        ({"reward": {"override": "mth"}}, "reward.override: "),
        ({"grpo": {"reward": "0.8*{reward}+0.2*formt"}}, "grpo.reward: unknown reward 'formt'; did you mean 'format'?"),
        ({"grpo": {"reward": "0.8*{reward}+0.2*{reward}"}}, "grpo.reward: reward composition '0.8*{reward}+0.2*{reward}' "
                                                           "names {reward} twice"),
        ({"per_iteration": {2: {"grpo": {"reward": "0.8*{reward}+"}}}}, "per_iteration.2.grpo.reward: cannot read reward "
                                                                        "composition '0.8*{reward}+'"),
        # values that would fail only when their stage starts, or quietly do the wrong thing
        ({"data": {**MINIMAL["data"], "rl": []}}, "data.rl: no RL problems given"),
        ({"data": {**MINIMAL["data"], "rl": {"stop": 5}}}, "data.rl: entry 0 has no path"),  # '' would read the cwd
        ({"data": {**MINIMAL["data"], "eval": {"held": ""}}}, "data.eval.held: no path given"),
        ({"rl_data": {"min_pass": 0.5, "max_pass": 0.2}}, "rl_data.max_pass: must be above rl_data.min_pass (0.5)"),
        ({"rl_data": {"temperature": 0}}, "rl_data.temperature: must be > 0, got 0.0 (greedy samples all agree"),
        ({"rl_data": {"samples": 3, "min_pass": 0.7, "max_pass": 0.9}},
         "rl_data.samples: with samples=3 a problem whose samples are all judged has a pass rate of 0, 1/3, 2/3 or 1, and "
         "none lies in the band 0.7 < pass rate < 0.9, so it would keep nothing"),
        ({"per_iteration": {2: {"rl_data": {"samples": 1}}}}, "per_iteration.2.rl_data.samples: with samples=1 a problem whose "
                                                               "samples are all judged has a pass rate of 0 or 1, and none"),
        ({"rl_data": {"samples": 3}, "per_iteration": {2: {"rl_data": {"min_pass": 0.7, "max_pass": 0.9}}}},
         "per_iteration.2.rl_data.min_pass: with samples=3"),  # the key the iteration sets, not the top-level one
        ({"per_iteration": {2: {"rl_data": {"min_pass": 0.9}}}, "rl_data": {"max_pass": 0.5}},
         "per_iteration.2.rl_data.min_pass: must be above rl_data.min_pass (0.9), got 0.5"),
        ({"sft": {"lr": "1e400"}}, "sft.lr: must be a finite number, got inf"),
        # not finite: YAML's .nan and .inf are floats, and no check written as `value < 0` catches nan
        ({"grpo": {"kl_coef": float("nan")}}, "grpo.kl_coef: must be a finite number, got nan"),
        ({"reward": {"timeout": float("inf")}}, "reward.timeout: must be a finite number, got inf"),  # would lift the limit
        ({"per_iteration": {2: {"sft": {"lr": float("-inf")}}}}, "per_iteration.2.sft.lr: must be a finite number, got -inf"),
        ({"grpo": {"format_weight": -1}}, "grpo.format_weight: must be in [0, 1] (the reward is (1 - w) x reward + w x format), "
                                          "got -1.0"),
        # a prompt without what its stage fills in would send every request without its question
        ({"roles": {"student": {"model": "MODEL", "prompt": "Q: {questoin}"}}},
         "roles.student.prompt: must contain {question} once and no <image> of its own (the question brings its images), "
         "got 'Q: {questoin}'"),
        ({"roles": {"student": {"model": "MODEL"}, "evaluator": {"prompt": "<image> {question}"}}},
         "roles.evaluator.prompt: must contain {question} once and no <image> of its own"),
        ({"per_iteration": {2: {"roles": {"student": {"prompt": "Answer."}}}}},
         "per_iteration.2.roles.student.prompt: must contain {question} once"),
        ({"roles": {"student": {"model": "MODEL"}, "reasoner": {"engine": "program", "model": "toyworld-reasoner",
                                                              "prompt": "Q: {question}"}}},
         "roles.reasoner.prompt: must contain {caption} and {question}, got 'Q: {question}'"),
        ({"roles": {"student": {"model": "MODEL"}, "captioner": {"engine": "program", "model": "toyworld-captioner",
                                                               "prompt": "Describe the image."}}},
         "roles.captioner.prompt: must contain exactly one <image> (all of a problem's images go there)"),
        ({"rl_data": {"max_problems": 0}}, "rl_data.max_problems: must be >= 1, or null for no limit, got 0"),
        ({"sft": {"max_length": 0}}, "sft.max_length: must be >= 1, or null for the student's context, got 0"),
        ({"per_iteration": {2: {"grpo": {"max_prompt_length": 0}}}},
         "per_iteration.2.grpo.max_prompt_length: must be >= 1, or null for the student's context less grpo.max_tokens"),
        ({"roles": {"student": {"model": "MODEL", "options": {"max_pixels": 3136, "min_pixels": 6272}}}},
         "roles.student.options: min_pixels: must be at most max_pixels (3136), got 6272"),
        ({"roles": {"student": {"model": "MODEL", "options": {"max_pixel": 3136}}}},
         "unknown hf engine option 'roles.student.options.max_pixel'; did you mean 'roles.student.options.max_pixels'"),
        ({"grpo": {"top_p": 5}}, "grpo.top_p: must be in (0, 1], got 5.0"),
        ({"grpo": {"kl_coef": -1}}, "grpo.kl_coef: must be >= 0, got -1.0"),
        ({"reward": {"correct_at": 0}}, "reward.correct_at: must be > 0, got 0.0"),
        ({"backend": {"options": {"threads": "four"}}}, "backend.options.threads: must be an integer >= 1, got 'four'"),
        ({"backend": {"options": {"checkpoint_every": -1}}}, "backend.options.checkpoint_every: must be an integer >= 0, got -1"),
        ({"roles": {"student": {"model": "MODEL", "options": {"batch_size": "abc"}}}},
         "roles.student.options.batch_size: expected int, got str 'abc'"),
        ({"roles": {"student": {"model": "MODEL", "options": {"batch_size": 0}}}},
         "roles.student.options: batch_size: must be >= 1, got 0"),
        ({"roles": {"student": {"model": "MODEL"}, "evaluator": {"options": {"dtype": "fp16"}}}},
         "roles.evaluator.options: dtype: must be one of float32, bfloat16, float16, got 'fp16'"),
        ({"roles": {"student": {"model": "MODEL"}, "captioner": {"engine": "program", "model": "toyworld-captioner",
                                                               "options": {"miss_rate": 5}}}},
         "roles.captioner.options: miss_rate must be in [0, 1], got 5"),
        ({"per_iteration": {2: {"roles": {"student": {"model": "other"}}}}},
         "per_iteration.2.roles.student.model: every iteration's SFT starts from the base student"),
        ({"per_iteration": {2: {"iterations": 5}}}, "per_iteration.2.iterations: set the number of iterations at the top level"),
        ({"per_iteration": {2: {"roles": {"evaluator": {"model": "MODEL"}}}}}, "per_iteration.2.roles.evaluator.model: leave it empty"),
        ({"per_iteration": {2: {"data": {"eval": {"other": "DATA"}}}}},
         "per_iteration.2.data.eval: the held-out sets are the same for every iteration"),
        ({"per_iteration": {"2": {"sft": {"steps": 3}}, 2: {"sft": {"steps": 4}}}}, "per_iteration.2: given twice"),
        # values that would fail only when their stage starts, hours in
        ({"sft": {"batch_size": 32, "grad_accum": 3}}, "sft.grad_accum: sft.batch_size (32) must be a multiple of sft.grad_accum (3)"),
        ({"sft": {"batch_size": 8, "grad_accum": 2}, "per_iteration": {2: {"sft": {"batch_size": 9}}}},
         "per_iteration.2.sft.batch_size: sft.batch_size (9) must be a multiple of sft.grad_accum (2)"),
        ({"grpo": {"mini_batches": 3}}, "grpo.mini_batches: a step's 16 prompts do not split into 3 mini-batches of whole "
                                         "prompt groups: grpo.prompts_per_step must be a multiple of grpo.mini_batches"),
        ({"prepare": {"toyworld": {"n_train": "abc"}}}, "prepare.toyworld.n_train: expected int, got str 'abc'"),
        ({"prepare": {"tiny_student": {"hidden": 1.5}}}, "prepare.tiny_student.hidden: expected int, got float 1.5"),
        ({"name": " "}, "name: empty; the run directory is runs/<name>"),
        ({"prepare": {"toyworld": {}}}, "prepare.toyworld.n_train: missing (the toy world needs n_train)"),
        ({"prepare": {"toyworld": {"n_train": 8, "n_test": 4, "grid": "4"}}}, "prepare.toyworld.grid: expected int, got str '4'"),
        ({"prepare": {"toyworld": {"n_train": 8, "n_test": 4, "grid": 9}}}, "prepare.toyworld.grid: must be 3 to 8, got 9"),
        ({"prepare": {"toyworld": {"n_train": 8, "n_test": 4, "kinds": {"count": 1.0}}}},
         "prepare.toyworld.kinds: unknown question kind 'count'; the kinds are count_colour, count_shape"),
        ({"prepare": {"toyworld": {"n_train": 8, "n_test": 4, "kinds": {"sum": 0.0}}}},
         "prepare.toyworld.kinds: no question kind with a weight above 0 has a level in [1, 2, 3]"),
        ({"prepare": {"tiny_student": {"kv_heads": 3}}}, "prepare.tiny_student: heads (4) must be a multiple of kv_heads (3)"),
        ({"prepare": {"tiny_student": {"vision_heads": 3}}},
         "prepare.tiny_student: vision_hidden (64) / vision_heads (3) must be an even whole number"),
        ({"seed": 2**32}, "seed: must be below 2**32 (4294967296), got 4294967296"),
        ({"name": ".."}, "name: '..' leads out of runs/; the run directory is runs/<name>"),
        ({"name": "a/../.."}, "name: 'a/../..' leads out of runs/"),
        ({"name": "."}, "name: '.' leads out of runs/"),
    ],
)
def test_bad_keys_and_types_name_the_key(tmp_path, toyworld_dir, tiny_student, changes, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, toyworld_dir, tiny_student, **changes))
    assert message in str(err.value)


def test_an_rl_data_band_is_refused_only_when_no_pass_rate_its_samples_can_give_lies_in_it(tmp_path, toyworld_dir, tiny_student):
    path = write(tmp_path, toyworld_dir, tiny_student, rl_data={"samples": 2, "min_pass": 0.4, "max_pass": 0.6})
    assert load_recipe(path).rl_data.samples == 2  # keeps the problems solved once in two
    with pytest.raises(RecipeError, match=r"with samples=3 a problem whose samples are all judged has a pass rate of 0, 1/3, 2/3 or 1"):
        load_recipe(path, ["rl_data.samples=3"])
    assert load_recipe(path, ["rl_data.samples=1", "rl_data.min_pass=-0.1", "rl_data.max_pass=1.1"]).rl_data.samples == 1  # keeps all


def test_an_evaluator_prompt_left_empty_is_the_students(tmp_path, toyworld_dir, tiny_student):
    path = write(tmp_path, toyworld_dir, tiny_student, roles={"student": {"model": "MODEL", "prompt": "Q: {question}"},
                                                              "evaluator": {"prompt": ""}})
    assert load_recipe(path).roles.evaluator.prompt == ""  # the loop asks with `roles.student.prompt`
    with pytest.raises(RecipeError, match=r"roles.student.prompt: must contain \{question\} once"):
        load_recipe(path, ["roles.student.prompt="])  # the student's own prompt cannot be empty


def test_a_reward_plugin_whose_import_hangs_is_named_by_its_key_without_hanging_the_check(
        tmp_path, toyworld_dir, tiny_student, monkeypatch):
    import rewards.registry

    monkeypatch.setattr(rewards.registry, "LOAD_LIMIT_S", 1.0)
    waits = plugin_file(tmp_path / "waits.py", "import time\ntime.sleep(600)")
    with pytest.raises(RecipeError, match=r"recipe.yaml: reward.override: loading reward '.*waits.py:score' took more than 1 s"):
        load_recipe(write(tmp_path, toyworld_dir, tiny_student, reward={"override": waits}))


def test_a_training_reward_around_the_problems_own_is_checked_and_kept_as_written(tmp_path, toyworld_dir, tiny_student):
    short = plugin_file(tmp_path / "short.py", "")
    path = write(tmp_path, toyworld_dir, tiny_student)
    spec = f"0.9*{{reward}}+0.1*{short}"
    assert load_recipe(path, [f"grpo.reward={spec}"]).grpo.reward == spec  # text as written, not YAML's mapping
    assert load_recipe(path, ["per_iteration.2.grpo.reward=format"]).for_iteration(2).grpo.reward == "format"


def test_a_reward_plugin_in_the_run_directory_is_checked_where_it_is(tmp_path, toyworld_dir, tiny_student):
    """`{run_dir}` in a plugin path is expanded before the plugin is checked, so the check looks in the run
    directory, not for a folder literally called `{run_dir}`."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    plugin_file(run_dir / "mine.py", "")
    path = write(tmp_path, toyworld_dir, tiny_student, run_dir=str(run_dir))
    recipe = load_recipe(path, ["grpo.reward=0.5*{reward}+0.5*{run_dir}/mine.py:score", "reward.override={run_dir}/mine.py:score"])
    assert recipe.grpo.reward == f"0.5*{{reward}}+0.5*{run_dir}/mine.py:score"
    assert recipe.reward.override == f"{run_dir}/mine.py:score"
    with pytest.raises(RecipeError, match=rf"grpo.reward: .*{re.escape(str(run_dir))}/missing.py"):
        load_recipe(path, ["grpo.reward={run_dir}/missing.py:score"])


def test_an_upgrade_alone_leaves_the_work_digest_of_an_older_run_as_it_was(tmp_path):
    """An interrupted stage keeps its saved work only while the work digest matches. 7e3a1fcf2193d93b is
    what 6389861, before grpo.reward existed, computed for this recipe: keys added since, at the value
    that computes what older runs computed, must not change it. (A changed default does: then older
    runs' interrupted stages start over, and this value is updated on purpose.)"""
    path = tmp_path / "recipe.yaml"
    path.write_text("name: digest\nrun_dir: /runs/digest\nroles: {student: {engine: hf, model: /models/student}}\n"
                    "data: {sft: /data/a.parquet, rl: /data/b.parquet, eval: {held: /data/c.parquet}}\n")
    assert load_recipe(path, check_paths=False).work_digest() == "7e3a1fcf2193d93b"
    for changed in ("grpo.reward=0.9*{reward}+0.1*format", "sft.max_length=4096", "grpo.max_prompt_length=512"):
        assert load_recipe(path, [changed], check_paths=False).work_digest() != "7e3a1fcf2193d93b"


def test_missing_inputs_are_named(tmp_path, toyworld_dir, tiny_student):
    path = write(tmp_path, toyworld_dir, tiny_student, data={**MINIMAL["data"], "rl": "nowhere/rl.parquet"})
    with pytest.raises(RecipeError, match="data.rl: nowhere/rl.parquet"):
        load_recipe(path)
    path = write(tmp_path, toyworld_dir, tiny_student, data={**MINIMAL["data"], "rl": "DATA/tr*.parquet"})
    assert load_recipe(path).data.rl[0].path == f"{toyworld_dir}/tr*.parquet"  # a name pattern matching files is there
    path = write(tmp_path, toyworld_dir, tiny_student, data={**MINIMAL["data"], "rl": "DATA/validation-*.parquet"})
    with pytest.raises(RecipeError, match=r"data.rl: .*validation-\*.parquet"):  # one matching none is not
        load_recipe(path)
    path = write(tmp_path, toyworld_dir, tiny_student, roles={"student": {"engine": "hf", "model": "./no-model"}})
    with pytest.raises(RecipeError, match=r"roles.student.model: ./no-model"):
        load_recipe(path)
    for role in ("student", "reasoner"):  # a file is no model folder (a config.json, the recipe itself)
        path = write(tmp_path, toyworld_dir, tiny_student, roles={**MINIMAL["roles"], role: {"engine": "hf", "model": str(tiny_student / "config.json")}})
        with pytest.raises(RecipeError, match=rf"missing input\(s\):\n  roles.{role}.model: .*config.json \(a file, not a model folder\)"):
            load_recipe(path)


def _model_folder(tmp_path, tiny_student, name, config_text) -> Path:
    """A copy of the tiny student whose config.json says `config_text` (None: no config.json at all)."""
    folder = tmp_path / name
    shutil.copytree(tiny_student, folder)
    if config_text is None:
        (folder / "config.json").unlink()
    else:
        (folder / "config.json").write_text(config_text(json.loads((folder / "config.json").read_text())))
    return folder


@pytest.mark.parametrize(
    "name, config_text, why",
    [
        ("remote", lambda c: json.dumps({**c, "model_type": "internvl_chat",
                                         "auto_map": {"AutoConfig": "configuration_internvl_chat.InternVLChatConfig"}}),
         "its config.json needs the model's own Python code (auto_map, transformers' trust_remote_code), which openvlt "
         "does not run"),
        ("parent", None, "has no config.json: is it a model folder (or the folder above one)?"),
        ("broken", lambda c: json.dumps(c)[:-40], "is not a model folder transformers can read: It looks like the "
                                                  "config file at"),
        ("unknown", lambda c: json.dumps({**c, "model_type": "qwen9_vl"}), "has model type `qwen9_vl`"),
    ],
)
@pytest.mark.parametrize("role", ["student", "reasoner"])
def test_a_model_folder_transformers_cannot_read_is_named_before_anything_runs(
        tmp_path, toyworld_dir, tiny_student, monkeypatch, name, config_text, why, role):
    """Such a folder used to pass the check and fail the stage that loads it (SFT, after captioning and
    distilling); one that needs its own code made transformers stop and ask on the terminal."""
    import builtins

    asked = []
    monkeypatch.setattr(builtins, "input", lambda *a: asked.append(a) or "y")  # a user at the terminal says yes
    folder = _model_folder(tmp_path, tiny_student, name, config_text)
    roles = {**MINIMAL["roles"], role: {"engine": "hf", "model": str(folder)}}
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, toyworld_dir, tiny_student, roles=roles))
    assert str(err.value).startswith(f"{tmp_path / 'recipe.yaml'}: roles.{role}.model: {folder} ")
    assert why in str(err.value) and not asked


@pytest.mark.parametrize(
    "override, message",
    [
        ("backend.options.device=gpu0", "backend.options.device: 'gpu0' is not a torch device"),
        # no machine has 100 GPUs: on a CPU machine "sees no cuda device", on a GPU machine "has N cuda device(s)"
        ("roles.student.options.device=cuda:99", r"roles.student.options.device: 'cuda:99': this (torch|machine)"),
        ("per_iteration.2.roles.evaluator.options.device=cuda:99", "per_iteration.2.roles.evaluator.options.device: 'cuda:99'"),
    ],
)
def test_a_device_the_machine_lacks_is_named_before_anything_runs(tmp_path, toyworld_dir, tiny_student, override, message):
    path = write(tmp_path, toyworld_dir, tiny_student, iterations=2, roles={"student": {"engine": "hf", "model": "MODEL"},
                                                                          "evaluator": {"engine": "hf"}})
    with pytest.raises(RecipeError, match=message):
        load_recipe(path, [override])
    assert load_recipe(path, ["backend.options.device=cpu", "roles.student.options.device=cpu"]).backend.options == {"device": "cpu"}


def test_hf_engines_without_a_device_run_where_the_local_backend_trains(tmp_path, toyworld_dir, tiny_student):
    """One `backend.options.device=...` moves generation too; a role's own device wins; program
    engines take no device. (A device string any torch accepts; paths are not checked here.)"""
    path = write(tmp_path, toyworld_dir, tiny_student, iterations=2,
                 roles={"captioner": {"engine": "program", "model": "toyworld-captioner"},
                        "student": {"engine": "hf", "model": "MODEL", "options": {"batch_size": 8}},
                        "evaluator": {"engine": "hf", "options": {"device": "cpu"}}})
    on_cpu = load_recipe(path, check_paths=False)
    assert [on_cpu.role_options(role) for role in ("captioner", "student", "evaluator")] == [{}, {"batch_size": 8}, {"device": "cpu"}]
    moved = load_recipe(path, ["backend.options.device=cuda:3"], check_paths=False)
    assert moved.role_options("student") == {"batch_size": 8, "device": "cuda:3"}
    assert moved.role_options("evaluator") == {"device": "cpu"} and moved.role_options("captioner") == {}
    assert moved.roles.student.options == {"batch_size": 8}  # the recipe itself is unchanged (and so is its digest)
    later = load_recipe(path, ["per_iteration.2.backend.options.device=cuda:1"], check_paths=False)
    assert later.for_iteration(1).role_options("student") == {"batch_size": 8}
    assert later.for_iteration(2).role_options("student") == {"batch_size": 8, "device": "cuda:1"}


def test_the_evaluator_sees_images_at_the_size_the_student_is_trained_on(tmp_path, toyworld_dir, tiny_student):
    """The student's max_pixels / min_pixels are what SFT and GRPO train with (`pixel_bounds`); the
    evaluator takes each one it does not set itself."""
    bounds = {"max_pixels": 12544, "min_pixels": 3136}
    path = write(tmp_path, toyworld_dir, tiny_student,
                 roles={"student": {"engine": "hf", "model": "MODEL", "options": {"batch_size": 8, **bounds}},
                        "evaluator": {"engine": "hf"}})
    recipe = load_recipe(path)
    assert recipe.pixel_bounds() == bounds and recipe.role_options("evaluator") == bounds
    own = load_recipe(path, ["roles.evaluator.options.max_pixels=50176"])
    assert own.role_options("evaluator") == {**bounds, "max_pixels": 50176} and own.pixel_bounds() == bounds
    plain = load_recipe(path, ["roles.student.options={batch_size: 8}"])
    assert plain.pixel_bounds() == {} and plain.role_options("evaluator") == {}


def test_image_size_bounds_on_a_text_only_model_are_refused_with_the_recipe(tmp_path, toyworld_dir, tiny_student, tiny_reasoner):
    path = write(tmp_path, toyworld_dir, tiny_student, roles={
        "student": {"engine": "hf", "model": "MODEL"},
        "reasoner": {"engine": "hf", "model": str(tiny_reasoner), "options": {"min_pixels": 3136}}})
    with pytest.raises(RecipeError, match=f"roles.reasoner.options.min_pixels: {tiny_reasoner} is a text-only model: it reads no images"):
        load_recipe(path)
    assert load_recipe(path, ["roles.reasoner.options={}"]).roles.reasoner.options == {}
    later = {2: {"roles": {"captioner": {"engine": "hf", "model": str(tiny_reasoner)}}}}  # a text-only captioner
    path = write(tmp_path, toyworld_dir, tiny_student, per_iteration=later)
    with pytest.raises(RecipeError, match=f"recipe.yaml: per_iteration.2.roles.captioner.model: {tiny_reasoner} is a text-only model, but"):
        load_recipe(path)


def test_a_ray_job_needs_a_run_directory_that_outlives_it(tmp_path, toyworld_dir, tiny_student, monkeypatch):
    """`ray job submit --working-dir .` runs the entrypoint in a temporary copy of the upload: a relative
    run directory would vanish with it, and the resubmitted job could not resume."""
    path = write(tmp_path, toyworld_dir, tiny_student)
    assert load_recipe(path).run_dir == "runs/unit"  # not in a Ray job: relative to where you are
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_1.zip"}}')
    with pytest.raises(RecipeError, match=r"run_dir: 'runs/unit' is relative, and this is a Ray job.*--run-dir /shared/runs/NAME"):
        load_recipe(path)
    assert load_recipe(path, [f"run_dir={tmp_path / 'runs'}"]).run_dir == str(tmp_path / "runs")


def test_a_hub_name_is_checked_against_the_cache_offline_and_announced_online(tmp_path, toyworld_dir, tiny_student,
                                                                           monkeypatch, caplog):
    """`checkpoints/qwen7b` is a hub name or a folder that is not there: offline, only the cache can
    serve it, so a miss is a missing input; online, the download is announced with the key."""
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    path = write(tmp_path, toyworld_dir, tiny_student, roles={"student": {"engine": "hf", "model": "checkpoints/qwen7b"}})
    with pytest.raises(RecipeError, match=r"roles.student.model: checkpoints/qwen7b \(no such folder, and not in the "
                                          r"Hugging Face cache"):
        load_recipe(path)
    snapshot = tmp_path / "hub" / "models--checkpoints--qwen7b" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    shutil.copy(tiny_student / "config.json", snapshot)  # read offline too: a cached config must be a model's
    (tmp_path / "hub" / "models--checkpoints--qwen7b" / "refs").mkdir()
    (tmp_path / "hub" / "models--checkpoints--qwen7b" / "refs" / "main").write_text("abc123")
    assert load_recipe(path).roles.student.model == "checkpoints/qwen7b"  # cached: loads offline
    shutil.rmtree(tmp_path / "hub")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with caplog.at_level("WARNING", logger="openvlt.recipe"):
        load_recipe(path)
    assert "roles.student.model: 'checkpoints/qwen7b' is no local folder" in caplog.text
    assert "'./checkpoints/qwen7b'" in caplog.text
    for folder in ("C:/qwen", "ckpt/qwen--7b", "./checkpoints/qwen7b"):  # no valid hub name: a missing folder, named
        path = write(tmp_path, toyworld_dir, tiny_student, roles={"student": {"engine": "hf", "model": folder}})
        with pytest.raises(RecipeError, match=f"roles.student.model: {folder}$"):
            load_recipe(path)


def test_override_values_text_merged_blocks_and_run_dir_spellings(tmp_path, toyworld_dir, tiny_student):
    """A text key takes the text as written (YAML would cut `#3` as a comment, or read `a: {b}` as a
    mapping); a `{k: v}` value changes those keys of its block and keeps the others; `"2":` in the file
    and `per_iteration.2.` on the command line are one iteration; `runs/x/` and `runs/x` one run."""
    path = write(tmp_path, toyworld_dir, tiny_student, sft={"steps": 9, "lr": 0.003, "grad_accum": 4},
                 per_iteration={"2": {"sft": {"steps": 7}}})
    r = load_recipe(path, ["run_dir=runs/exp #3", "roles.student.prompt=Answer: {question}", "sft={steps: 5}",
                           "per_iteration.2.grpo.lr=1e-5", "roles.student.system='quoted'", "name=2024"], check_paths=False)
    assert (r.run_dir, r.roles.student.prompt, r.roles.student.system, r.name) == ("runs/exp #3", "Answer: {question}", "quoted", "2024")
    assert (r.sft.steps, r.sft.lr, r.sft.grad_accum) == (5, 0.003, 4)
    assert r.per_iteration == {2: {"sft": {"steps": 7}, "grpo": {"lr": 1e-5}}}
    assert load_recipe(path, ["reward.override=null"], check_paths=False).reward.override is None
    r = load_recipe(path, ["data.rl=runs/exp #3/rl.parquet", "data.eval.held=/data/test #2.parquet",
                           "data.sft={path: a.parquet, stop: 3}"], check_paths=False)  # a data file's path too
    assert (r.data.rl[0].path, r.data.eval["held"].path) == ("runs/exp #3/rl.parquet", "/data/test #2.parquet")
    assert (Path(r.data.sft[0].path).name, r.data.sft[0].stop) == ("a.parquet", 3)
    r = load_recipe(path, ["per_iteration.2.roles.student.prompt=Answer: {question}", "select.policy= random",
                           "data.eval={other: x.parquet}", "roles.student.options={}"], check_paths=False)
    assert r.for_iteration(2).roles.student.prompt == "Answer: {question}" and r.select.policy == "random"
    assert list(r.data.eval) == ["other"] and r.roles.student.options == {}  # mappings of names are replaced whole
    r = load_recipe(path, ["data={eval: {other: x.parquet}}", "roles.student={options: {}}", "sft={grad_accum: 2}"],
                    check_paths=False)  # also inside a block a mapping sets: merged block by block, names replaced
    assert list(r.data.eval) == ["other"] and r.roles.student.options == {} and (r.sft.steps, r.sft.grad_accum) == (9, 2)
    assert r.data.sft == load_recipe(path, check_paths=False).data.sft
    with pytest.raises(RecipeError, match=r"unknown recipe key 'sft.stpes'; did you mean 'sft.steps'"):
        load_recipe(path, ["sft={stpes: 5}"], check_paths=False)
    anchors = tmp_path / "anchors.yaml"  # YAML merge keys still work under the duplicate-key check
    anchors.write_text(path.read_text() + "distill: &gen {samples: 2, top_p: 0.9}\nregenerate: {<<: *gen, samples: 3}\n")
    r = load_recipe(anchors, check_paths=False)
    assert (r.regenerate.samples, r.regenerate.top_p, r.distill.samples) == (3, 0.9, 2)
    assert load_recipe(path, [f"run_dir={tmp_path}/run/"]).run_dir == load_recipe(path, [f"run_dir={tmp_path}/x/../run"]).run_dir \
        == f"{tmp_path}/run"
    with pytest.raises(RecipeError, match=r"override data.eval.held.stop: data.eval.held is the value '/.*, not a "
                                          r"mapping: set it whole, e.g. data.eval.held=\{path: ..., stop: 100\}"):
        load_recipe(path, ["data.eval.held.stop=5"])
    with pytest.raises(RecipeError, match=r"data.sft is a list, not a mapping: set it whole, e.g. data.sft=\[\{path: ..."):
        load_recipe(path, ["data.sft=[{path: x}]", "data.sft.0.start=5"])
    twice = tmp_path / "twice.yaml"
    twice.write_text(path.read_text() + "sft: {steps: 500}\n")
    with pytest.raises(RecipeError, match=r"key 'sft' appears twice in one mapping \(lines \d+ and \d+\)"):
        load_recipe(twice)


def test_a_plugin_too_big_for_reward_memory_mb_is_refused_when_the_recipe_is_checked(tmp_path, toyworld_dir, tiny_student):
    """Not after captioning and SFT, when every judged item would fail."""
    plugin = tmp_path / "holds_a_table.py"
    plugin.write_text("TABLE = bytearray(300 * 2**20)\n\ndef score(response, ground_truth, *, extra_info):\n    return 1.0\n")
    path = write(tmp_path, toyworld_dir, tiny_student, reward={"override": f"{plugin}:score", "memory_mb": 100})
    with pytest.raises(RecipeError, match=r"reward.override: .*MemoryError.*raise it with reward.memory_mb"):
        load_recipe(path)
    assert load_recipe(path, ["reward.memory_mb=1000"]).reward.memory_mb == 1000


@pytest.mark.parametrize("override", ["sft=null", "grpo=~", "per_iteration.2.sft=null", "roles.student=null"])
def test_null_for_a_block_of_settings_is_refused_not_read_as_its_defaults(tmp_path, toyworld_dir, tiny_student, override):
    """`sft=null` used to run SFT with the default 1000 steps and lr, silently; a null that means
    something (an optional value) is still taken."""
    path = write(tmp_path, toyworld_dir, tiny_student, sft={"steps": 9})
    key = override.split("=")[0]
    with pytest.raises(RecipeError, match=rf"override {re.escape(override)}: {re.escape(key)} is a block of settings, "
                                          rf"which null would reset to the defaults; set its keys \({re.escape(key)}.KEY=VALUE\)"):
        load_recipe(path, [override], check_paths=False)
    assert load_recipe(path, ["reward.override=null"], check_paths=False).reward.override is None
    with pytest.raises(RecipeError, match=r"data.eval.held: no path given"):  # an entry of a mapping of names: no block
        load_recipe(path, ["data.eval.held=null"], check_paths=False)


def test_overrides_per_iteration_and_run_dir(tmp_path, toyworld_dir, tiny_student):
    path = write(tmp_path, toyworld_dir, tiny_student, per_iteration={2: {"sft": {"steps": 7}}})
    recipe = load_recipe(path, ["sft.steps=3", "grpo.lr=1e-4", "run_dir=" + str(tmp_path / "run"), "roles.student.options={device: cpu}"])
    assert recipe.sft.steps == 3 and recipe.grpo.lr == 1e-4 and recipe.roles.student.options == {"device": "cpu"}
    assert recipe.for_iteration(1).sft.steps == 3 and recipe.for_iteration(2).sft.steps == 7
    assert recipe.run_dir == str(tmp_path / "run")
    with pytest.raises(RecipeError, match="did you mean 'sft.steps'"):
        load_recipe(path, ["sft.step=3"])
    with pytest.raises(RecipeError, match="not of the form key.sub=value"):
        load_recipe(path, ["sft.steps"])
    default_dir = load_recipe(path)
    assert default_dir.run_dir == "runs/unit"


def test_per_iteration_entries_past_the_last_iteration_are_unused_but_checked(tmp_path, toyworld_dir, tiny_student, caplog):
    path = write(tmp_path, toyworld_dir, tiny_student, iterations=2, per_iteration={2: {"sft": {"steps": 7}}})
    recipe = load_recipe(path, ["iterations=1"])  # a quicker look at a two-iteration recipe
    assert recipe.iterations == 1 and recipe.per_iteration == {2: {"sft": {"steps": 7}}}
    assert "per_iteration.2 is not used: the recipe runs 1 iteration" in caplog.text
    with pytest.raises(RecipeError, match="per_iteration.2.sft.batch_size: must be >= 1, got 0"):
        load_recipe(path, ["iterations=1", "per_iteration.2.sft.batch_size=0"])  # the next run may use it
    caplog.clear()
    train = str(toyworld_dir / "train.parquet")
    load_recipe(path, ["iterations=1", f"data.sft=[{train}, {train}, {train}]"])
    assert "data.sft has 3 entries, one per iteration: entries 2, 3 are not used (the recipe runs 1 iteration)" in caplog.text
    assert "data.rl has" not in caplog.text


def test_run_dir_placeholder_and_prepared_paths(tmp_path, tiny_student):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "p", "run_dir": str(tmp_path / "run"), "prepare": {"toyworld": {"n_train": 5}},
        "data": {"sft": "{run_dir}/data/toyworld/train.parquet", "rl": "{run_dir}/data/toyworld/train.parquet",
                 "eval": {"t": "{run_dir}/data/toyworld/test.parquet"}},
        "roles": {"student": {"model": str(tiny_student)}},
    }))
    recipe = load_recipe(path)  # the files do not exist yet: prepare builds them
    assert recipe.data.sft[0].path == f"{tmp_path}/run/data/toyworld/train.parquet"


def test_a_recipe_changed_before_any_stage_completed_is_taken_and_the_old_one_kept(tmp_path, toyworld_dir, tiny_student, caplog):
    """Nothing completed is nothing to protect (saved work of an interrupted stage is reused only if made
    from the same values): a run that failed at its first stage is fixed and rerun without --force."""
    path = write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"))
    Workspace.open(load_recipe(path))
    for lr in ("0.5", "0.25"):  # twice within a second: two old recipes kept, not one over the other
        Workspace.open(load_recipe(path, [f"sft.lr={lr}"]))
        assert f"lr: {lr}" in (tmp_path / "run" / "recipe.yaml").read_text()
    assert "no stage had completed: recipe changed (sft.lr: 0.5 -> 0.25)" in caplog.text
    kept = sorted(yaml.safe_load(p.read_text())["sft"]["lr"] for p in (tmp_path / "run").glob("recipe.*.yaml"))
    assert kept == [1e-05, 0.5]


def test_changed_recipe_is_refused_on_resume_unless_forced(tmp_path, toyworld_dir, tiny_student):
    path = write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"))
    changed = load_recipe(path, ["sft.lr=0.5"])
    Workspace.open(load_recipe(path)).stage("gen", lambda ctx: {"bytes": ctx.out["x"].write_text("done")}, outputs={"x": tmp_path / "run" / "x"})
    Workspace.open(load_recipe(path))  # same recipe: fine
    with pytest.raises(RecipeError, match=r"refusing to resume with a changed recipe:\n  sft.lr: 1e-05 -> 0.5"):
        Workspace.open(changed)
    Workspace.open(changed, force=True)
    assert "lr: 0.5" in (tmp_path / "run" / "recipe.yaml").read_text()
    assert len(list((tmp_path / "run").glob("recipe.*.yaml"))) == 1  # the old one is kept
    # frozen by an older version, without a key this one added: no change, the run resumes
    frozen = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    del frozen["select"]["keep_previous"], frozen["grpo"]["freeze_vision"]
    (tmp_path / "run" / "recipe.yaml").write_text(yaml.safe_dump(frozen))
    Workspace.open(changed)
    # frozen by a version that had a key this one lacks: a change like any other, not a locked directory
    frozen["sft"]["old_knob"] = 3
    (tmp_path / "run" / "recipe.yaml").write_text(yaml.safe_dump(frozen))
    with pytest.raises(RecipeError, match=r"sft.old_knob: 3 -> \(no such key in this version\)"):
        Workspace.open(changed)
    Workspace.open(changed, force=True)
    assert "old_knob" not in (tmp_path / "run" / "recipe.yaml").read_text()
    # the held-out sets in another order: the summary's headline (the first) would change under the run
    def with_eval(*names):  # (`write` sorts keys)
        raw = yaml.safe_load(path.read_text()) | {"sft": {"lr": 0.5}}
        raw["data"]["eval"] = {name: raw["data"]["eval"]["held"] for name in names}
        (tmp_path / "swapped.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return load_recipe(tmp_path / "swapped.yaml")

    Workspace.open(with_eval("held", "again"), force=True)
    swapped = with_eval("again", "held")
    with pytest.raises(RecipeError, match=r"data.eval: in the order \['held', 'again'\] -> \['again', 'held'\] \(the first is "
                                          r"the summary's headline set\)"):
        Workspace.open(swapped)
    Workspace.open(swapped, force=True)
    assert list(yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["data"]["eval"]) == ["again", "held"]


def test_an_invalid_base_value_is_named_as_such_when_an_iteration_overrides_other_grpo_keys(tmp_path, toyworld_dir, tiny_student):
    path = write(tmp_path, toyworld_dir, tiny_student, grpo={"temperature": 0}, per_iteration={1: {"grpo": {"lr": 1e-4}}})
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: grpo.temperature: must be > 0")


def test_an_error_names_the_recipe_file_and_the_overrides_it_was_loaded_with(tmp_path, toyworld_dir, tiny_student):
    path = write(tmp_path, toyworld_dir, tiny_student)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["sft.steps=-3", "seed=1"])
    assert str(err.value).startswith(f"{path} with sft.steps=-3 seed=1: sft.steps: must be >= 0")
    path = write(tmp_path, toyworld_dir, tiny_student, sft={"stepz": 3})
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: unknown recipe key 'sft.stepz'; did you mean 'sft.steps'?")


def test_the_reward_blocks_defaults_are_the_batch_scorers():
    """`reward.timeout` and `.memory_mb` default to what score_batch does when called on its own (the recipe
    module spells them out rather than load the reward stack on import)."""
    from openvlt.recipe import RewardSettings
    from rewards.batch import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT

    assert (RewardSettings().timeout, RewardSettings().memory_mb) == (DEFAULT_TIMEOUT, DEFAULT_MEMORY_MB)


def test_the_recipe_key_reference_lists_every_key_with_the_codes_default():
    """recipes/README.md is where a user looks a key up: it names every key the recipe check accepts, and
    no other, each with the default the code has."""
    import dataclasses
    import re

    from openvlt.recipe import Recipe, Role

    def defaults(cls, prefix=""):
        for f in dataclasses.fields(cls):
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if f.name == "roles":
                yield from ((f"roles.<role>.{k}", v) for k, v in defaults(Role))
            elif dataclasses.is_dataclass(value):
                yield from defaults(type(value), f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", value

    text = (Path(__file__).parents[2] / "recipes" / "README.md").read_text()
    documented = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S)[1])
    code = dict(defaults(Recipe))
    assert sorted(set(code) - set(documented)) == [] and sorted(set(documented) - set(code)) == []
    assert {k: v for k, v in documented.items() if v != code[k]} == {}


def test_a_model_with_a_tokenizer_but_no_chat_template_is_refused_with_the_recipe(tmp_path, toyworld_dir, tiny_student, tiny_reasoner):
    """A base model would fail at distill, after captioning; the recipe check names it first."""
    base = tmp_path / "base_lm"
    shutil.copytree(tiny_reasoner, base)
    (base / "chat_template.jinja").unlink()
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    reasoner = {"engine": "hf", "model": str(tiny_reasoner)}
    path = write(tmp_path, toyworld_dir, tiny_student, roles={**MINIMAL["roles"], "reasoner": reasoner})
    assert load_recipe(path).roles.reasoner.model == str(tiny_reasoner)
    with pytest.raises(RecipeError, match=r"roles.reasoner.model: .*base_lm has no chat template \(a base model\?\)"):
        load_recipe(path, [f"roles.reasoner.model={base}"])


def test_overrides_reach_into_an_empty_block_and_name_held_out_sets_that_look_like_numbers(tmp_path, toyworld_dir, tiny_student):
    path = write(tmp_path, toyworld_dir, tiny_student, sft=None, data={**MINIMAL["data"], "eval": {"2024": {"path": "DATA/test.parquet"}}})
    recipe = load_recipe(path, ["sft.steps=5", "data.eval.2024.stop=10"])  # `sft:` with only comments under it is null
    assert recipe.sft.steps == 5 and recipe.data.eval["2024"].stop == 10


def test_values_that_do_something_else_than_they_seem_are_warned_about_once(tmp_path, toyworld_dir, tiny_student, caplog):
    path = write(tmp_path, toyworld_dir, tiny_student, sft={"steps": 10, "warmup_steps": 30}, rl_data={"max_pass": 100})
    with caplog.at_level("WARNING", logger="openvlt.recipe"):
        load_recipe(path)
    assert caplog.text.count("sft.warmup_steps: 30 warm-up steps of 10: the learning rate reaches sft.lr") == 1
    assert caplog.text.count("rl_data.max_pass: 100.0 is outside [0, 1], so problems the model always solves are kept") == 1


def test_a_damaged_frozen_recipe_is_named_not_a_traceback(tmp_path, toyworld_dir, tiny_student):
    path = write(tmp_path, toyworld_dir, tiny_student, run_dir=str(tmp_path / "run"))
    Workspace.open(load_recipe(path))
    for damage in ("sft: [unclosed\n", "- a list\n"):
        (tmp_path / "run" / "recipe.yaml").write_text(damage)
        with pytest.raises(RecipeError, match=r"run/recipe.yaml, the recipe this run was started with, is not a recipe"):
            Workspace.open(load_recipe(path))


def test_a_data_file_missing_only_for_a_later_iteration_is_named_under_its_entry(tmp_path, toyworld_dir, tiny_student):
    path = write(tmp_path, toyworld_dir, tiny_student, per_iteration={2: {"data": {"rl": str(tmp_path / "gone.parquet")}}})
    with pytest.raises(RecipeError, match=r"missing input\(s\):\n  per_iteration.2.data.rl: .*gone.parquet"):
        load_recipe(path)


def test_a_later_iteration_merges_options_but_a_role_given_another_engine_drops_the_old_engines(tmp_path, toyworld_dir,
                                                                                               tiny_student):
    roles = {"student": {"engine": "hf", "model": "MODEL", "options": {"batch_size": 8, "dtype": "float32"}},
             "reasoner": {"engine": "program", "model": "toyworld-reasoner", "options": {"error_rate": 0.5}}}
    later = {"roles": {"student": {"options": {"batch_size": 4}},  # the student's dtype stays
                       "reasoner": {"engine": "hf", "model": "MODEL", "options": {"batch_size": 2}}}}  # no error_rate
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, roles=roles, per_iteration={2: later}))
    second = recipe.for_iteration(2)
    assert second.roles.student.options == {"batch_size": 4, "dtype": "float32"}
    assert (second.roles.reasoner.engine, second.roles.reasoner.options) == ("hf", {"batch_size": 2})
    assert recipe.for_iteration(1).roles.reasoner.options == {"error_rate": 0.5}
    other_program = {"roles": {"reasoner": {"model": "toyworld-captioner"}}}  # miss_rate, not error_rate, is its option
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, roles=roles, per_iteration={2: other_program}))
    assert recipe.for_iteration(2).roles.reasoner.options == {}
    same_program = {"roles": {"reasoner": {"engine": "program", "model": "toyworld-reasoner"}}}
    recipe = load_recipe(write(tmp_path, toyworld_dir, tiny_student, roles=roles, per_iteration={2: same_program}))
    assert recipe.for_iteration(2).roles.reasoner.options == {"error_rate": 0.5}


@pytest.mark.parametrize("entry, message", [
    ({"roles": {"captioner": {"engine": "hf", "model": "./nope"}}}, r"missing input\(s\):\n  per_iteration.2.roles.captioner.model: ./nope"),
    ({"roles": {"student": {"options": {"batch_sise": 4}}}},
     r"unknown hf engine option 'per_iteration.2.roles.student.options.batch_sise'; did you mean 'per_iteration.2.roles.student"),
    ({"backend": {"options": {"devcie": "cpu"}}}, r"unknown local backend option 'per_iteration.2.backend.options.devcie'"),
])
def test_an_option_or_model_folder_set_only_for_a_later_iteration_is_named_under_its_entry(tmp_path, toyworld_dir,
                                                                                         tiny_student, entry, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, toyworld_dir, tiny_student, per_iteration={2: entry}))


def test_a_recipe_is_read_as_utf8_whatever_the_locale(tmp_path, toyworld_dir, tiny_student):
    """A prompt in French reads the same under LANG=C; a recipe saved in another encoding is named."""
    import os
    import subprocess
    import sys

    path = write(tmp_path, toyworld_dir, tiny_student, roles={"student": {"model": "MODEL", "prompt": "PROMPT {question}"}})
    path.write_text(path.read_text().replace("PROMPT", "Réponds,"), encoding="utf-8")  # (safe_dump writes \xE9)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    code = "import sys; from openvlt.recipe import load_recipe; print(ascii(load_recipe(sys.argv[1]).roles.student.prompt))"
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == ascii("Réponds, {question}"), done.stderr[-1000:]
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))
    with pytest.raises(RecipeError, match=r"latin1.yaml: not UTF-8 text \(byte \d+: invalid continuation byte\); save the recipe as UTF-8"):
        load_recipe(latin)


@pytest.mark.parametrize("override, correct_at, warning", [
    ("math+format", 1.0, "the weights of math+format add up to 2, so an answer format scores 0 still reaches "
                         "reward.correct_at (1) and counts as correct"),
    ("0.7*math+0.2*format", 1.0, "an answer every part of 0.7*math+0.2*format scores 1 scores 0.9, below reward.correct_at "
                                 "(1): none will count as correct"),
    ("0.5*math", 1.0, "an answer every part of 0.5*math scores 1 scores 0.5, below reward.correct_at (1)"),
    ("0.9*math+0.1*format", 1.0, None),
    ("0.7*math+0.2*format+0.1*format", 1.0, None),  # (refused: a part named twice)
    ("0.5*math+0.5*format", 0.5, "the weights of 0.5*math+0.5*format add up to 1, so an answer format scores 0 still "
                                 "reaches reward.correct_at (0.5) and counts as correct (raise reward.correct_at above 0.5,"),
    ("math", 1.0, None),
])
def test_a_composition_whose_weights_miss_reward_correct_at_is_warned_about(tmp_path, toyworld_dir, tiny_student, caplog,
                                                                             override, correct_at, warning):
    path = write(tmp_path, toyworld_dir, tiny_student, reward={"override": override, "correct_at": correct_at})
    with caplog.at_level("WARNING", logger="openvlt.recipe"):
        try:
            load_recipe(path)
        except RecipeError as exc:
            assert "names a part twice" in str(exc) and warning is None
    if warning is None:
        assert "reward.correct_at" not in caplog.text
    else:
        assert f"reward.override: {warning}" in caplog.text, caplog.text


def test_paths_that_start_at_a_home_folder_are_expanded(tmp_path, toyworld_dir, tiny_student, monkeypatch):
    """`--run-dir=~/runs/x` reaches openvlt unexpanded (a shell expands `~` only at a word's start), and YAML
    never expands it: a literal `./~` folder, or "missing" for a file that exists, would surprise."""
    home = tmp_path / "home"
    shutil.copytree(toyworld_dir, home / "data")
    shutil.copytree(tiny_student, home / "student")
    monkeypatch.setenv("HOME", str(home))
    path = write(tmp_path, toyworld_dir, tiny_student, run_dir="~/runs/x",
                 data={"sft": "~/data/train.parquet", "rl": {"path": "~/data/train.parquet", "stop": 8},
                       "eval": {"held": "~/data/test.parquet"}},
                 roles={"student": {"engine": "hf", "model": "~/student", "prompt": "~ {question} ~", "system": "~"}})
    recipe = load_recipe(path)
    assert recipe.run_dir == str(home / "runs" / "x") and recipe.data.sft[0].path == str(home / "data" / "train.parquet")
    assert recipe.data.rl[0].path == str(home / "data" / "train.parquet")
    assert recipe.data.eval["held"].path == str(home / "data" / "test.parquet")
    assert recipe.roles.student.model == str(home / "student") and recipe.roles.student.prompt == "~ {question} ~"
    assert recipe.roles.student.system == "~"  # text, not a path
    assert load_recipe(path, ["run_dir=~/runs/y"]).run_dir == str(home / "runs" / "y")
