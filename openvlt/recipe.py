"""Recipes: one YAML file per experiment, validated before anything runs.

    recipe = load_recipe("recipes/tiny-cpu.yaml", ["sft.steps=800", "iterations=3"])

The schema is the dataclasses below; YAML keys map one to one onto their fields. Validation is at
the edge: an unknown key is an error naming the closest valid key, a wrong type names the key and
the type it wants, a missing data file or model folder is named. `key.sub=value` overrides are
parsed as YAML values and validated like the file. `{run_dir}` in any path expands to the run
directory. `per_iteration` holds overrides for single iterations (`2: {sft: {steps: 900}}`).
The resolved recipe is frozen into the run directory as recipe.yaml.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import inspect
import json
import logging
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from openvlt.backends import OWN_REWARD, SCHEDULES, GRPOConfig, SFTConfig
from openvlt.engines import IMAGE_PLACEHOLDER

log = logging.getLogger(__name__)

DEFAULT_CAPTION_PROMPT = (
    "<image>\nDescribe this image in detail, so that another AI model that cannot see it could understand it "
    "completely and answer questions about it. Do not answer any question; only describe."
)
DEFAULT_DISTILL_PROMPT = (
    "Image description: {caption}\n\nQuestion: {question}\n\nThink step by step inside <think> </think> tags, "
    "then give the final answer inside <answer> </answer> tags."
)


def check_prompt(role: str, template: str, key: str | None = None) -> None:
    """Raise ValueError (naming `key`, by default `roles.<role>.prompt`) when a role's prompt template lacks
    what its stage fills in: a typo such as `{questoin}` would otherwise send every request without its question."""
    if role == "captioner" and template.count(IMAGE_PLACEHOLDER) != 1:
        why = f"must contain exactly one {IMAGE_PLACEHOLDER} (all of a problem's images go there)"
    elif role == "reasoner" and ("{caption}" not in template or "{question}" not in template):
        why = "must contain {caption} and {question}"
    elif role in ("student", "evaluator") and (template.count("{question}") != 1 or IMAGE_PLACEHOLDER in template):
        why = f"must contain {{question}} once and no {IMAGE_PLACEHOLDER} of its own (the question brings its images)"
    else:
        return
    raise ValueError(f"{key or f'roles.{role}.prompt'}: {why}, got {template!r}")


# Knobs that change memory use or speed, not what a stage computes (the update is a token mean over
# the whole batch however it is split): the usual fix after an out-of-memory kill at 3 a.m.
MEMORY_ONLY = ("sft.grad_accum", "grpo.micro_batch_size", "backend.options.checkpoint_every", "backend.options.cache_mb",
               "backend.options.threads", "reward.memory_mb")

PIXEL_OPTIONS = ("max_pixels", "min_pixels")  # hf engine options bounding an image's size (Qwen2.5-VL processor arguments)

# Keys added after runs were made, at the value that computes what those runs computed: left out of the
# work digest, so an interrupted stage of an older run keeps its saved work after an upgrade.
ADDED_LATER = {"grpo.reward": None, "sft.max_length": None, "grpo.max_prompt_length": None}

_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the key (and the closest valid one)."""


@dataclass
class Role:
    """A model that writes text: an engine kind, a model (path, hub name or program) and options."""

    engine: str = "hf"
    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    prompt: Optional[str] = None  # captioner/reasoner: the request template; student: "{question}" wrapper
    system: Optional[str] = None


@dataclass
class Roles:
    captioner: Role = field(default_factory=Role)
    reasoner: Role = field(default_factory=Role)
    student: Role = field(default_factory=Role)
    evaluator: Role = field(default_factory=Role)  # no model: it evaluates each checkpoint in turn

    def __post_init__(self) -> None:  # a role given without a prompt gets its role's default
        for role, default in (("captioner", DEFAULT_CAPTION_PROMPT), ("reasoner", DEFAULT_DISTILL_PROMPT), ("student", "{question}")):
            if getattr(self, role).prompt is None:
                getattr(self, role).prompt = default


ROLE_NAMES = tuple(f.name for f in dataclasses.fields(Roles))  # captioner, reasoner, student, evaluator


@dataclass
class DataRef:
    """Rows [start, stop) of a problem-record file (stop null: to the end)."""

    path: str = ""
    start: int = 0
    stop: Optional[int] = None


def is_shard_set(path: str | Path) -> bool:
    """Whether a data path names a set of parquet shards read as one (in name order): a folder, or a
    file-name pattern such as `data/train-*.parquet` (a Hugging Face data folder holds every split)."""
    path = Path(path)
    return path.is_dir() or not path.exists() and bool(_PATTERN.search(path.name))  # (geo[v2].parquet is a file)


def pattern_matches(path: Path) -> list[Path]:
    """The files a data path's name pattern matches (`data/train-*.parquet`), in name order."""
    return sorted(p for p in path.parent.glob(path.name) if p.is_file())


def data_name(path: Path) -> str:
    """A data path's name, for a `data_source` left out and quarantine files: a file's or folder's, or a
    pattern's without its wildcards (`train-*.parquet` -> `train`)."""
    if not is_shard_set(path) or path.is_dir():
        return path.stem
    return _PATTERN.sub("", path.stem).strip("-_.") or path.parent.name


_PATTERN = re.compile(r"[*?\[]")


@dataclass
class Data:
    sft: list[DataRef] = field(default_factory=list)  # SFT problems; one entry per iteration, or one for all
    rl: list[DataRef] = field(default_factory=list)   # RL problems, likewise
    eval: dict[str, DataRef] = field(default_factory=dict)  # held-out sets; the first is the headline number
    skip_bad_rows: bool = False  # quarantine bad input rows to <run_dir>/quarantine/ instead of stopping


@dataclass
class Prepare:
    """Build data and models before iteration 1 (the embedded default uses this; real runs leave it empty)."""

    toyworld: Optional[dict[str, Any]] = None      # build_toyworld arguments; out defaults to {run_dir}/data/toyworld
    tiny_student: Optional[dict[str, Any]] = None  # TinySize fields + seed; out defaults to {run_dir}/models/student


@dataclass
class Caption:
    max_tokens: int = 512
    temperature: float = 0.0
    chunk_size: int = 256


@dataclass
class Distill:
    samples: int = 4            # traces per problem (OpenVLThinker: 4)
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 2048
    chunk_size: int = 256


POLICIES = ("shortest", "longest", "first", "random")  # which correct trace select keeps for a problem
REFLECTION_MARKERS = ("Wait,", "Wait ", "But wait", "Hmm,", "Alternatively,")  # where truncation may cut a trace


@dataclass
class Select:
    policy: str = "shortest"    # shortest | longest | first | random (among correct traces)
    truncate_reflections: bool = False
    reflection_markers: list[str] = field(default_factory=lambda: list(REFLECTION_MARKERS))
    max_tokens: Optional[int] = None  # length cap (student tokenizer) on the selected trace
    keep_previous: bool = False  # iterations 2+: unsolved problems keep the previous iteration's trace


@dataclass
class RLData:
    enabled: bool = True
    samples: int = 4            # rollouts per problem to estimate its pass rate
    min_pass: float = 0.0       # keep problems with min_pass < pass rate < max_pass
    max_pass: float = 1.0
    max_problems: Optional[int] = None
    temperature: float = 1.0
    max_tokens: int = 1024


@dataclass
class Evaluate:
    max_tokens: int = 1024
    temperature: float = 0.0
    samples_kept: int = 16      # outputs kept per set for the report
    max_problems: Optional[int] = None


@dataclass
class Regenerate:
    samples: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 2048
    chunk_size: int = 256
    retries: int = 0            # rounds of k more samples for problems with no verified trace yet


@dataclass
class RewardSettings:
    """How answers are judged (the recipe's `reward:` block). Each problem names its own plugin. The
    defaults are rewards.batch's (a test holds them equal; importing it here would load the reward stack)."""

    workers: int = 2            # reward worker processes
    timeout: float = 5.0        # hard wall-clock limit per item, seconds
    correct_at: float = 1.0     # a response is correct when its score is at least this
    override: Optional[str] = None  # judge every problem with this plugin instead of its own
    memory_mb: int = 2048       # address space each reward worker may take beyond its start, MiB (a plugin's model)

    def reward_of(self, problem: dict[str, Any]) -> str:
        """The plugin that judges `problem`: `override` when set, else the problem's own."""
        return self.override or problem["reward"]

    def is_correct(self, result: Any) -> bool:
        """A scorer result counts as correct: judged (no error or timeout) and scoring at least correct_at."""
        return bool(result.ok and result.score >= self.correct_at)


@dataclass
class Backend:
    name: str = "local"
    options: dict[str, Any] = field(default_factory=dict)  # passed verbatim (local: device, threads; verl: overrides)


@dataclass
class Recipe:
    name: str = "run"
    run_dir: Optional[str] = None  # default runs/<name>
    seed: int = 0
    iterations: int = 2
    roles: Roles = field(default_factory=Roles)
    data: Data = field(default_factory=Data)
    prepare: Prepare = field(default_factory=Prepare)
    caption: Caption = field(default_factory=Caption)
    distill: Distill = field(default_factory=Distill)
    select: Select = field(default_factory=Select)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rl_data: RLData = field(default_factory=RLData)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    evaluate: Evaluate = field(default_factory=Evaluate)
    regenerate: Regenerate = field(default_factory=Regenerate)
    reward: RewardSettings = field(default_factory=RewardSettings)
    backend: Backend = field(default_factory=Backend)
    per_iteration: dict[int, dict[str, Any]] = field(default_factory=dict)

    def for_iteration(self, k: int) -> "Recipe":
        """This recipe with `per_iteration[k]` merged in, key by key (the data lists pick their k-th entry
        too); a role whose engine (or program) the entry changes keeps none of its options: they were the
        other engine's."""
        raw, extra = to_dict(self), copy.deepcopy(self.per_iteration.get(k, {}))
        for name, role in (extra.get("roles") or {}).items():
            top = raw["roles"].get(name)
            if not (isinstance(role, dict) and isinstance(top, dict)):
                continue
            engine = role.get("engine", top["engine"])
            if engine != top["engine"] or engine == "program" and role.get("model", top["model"]) != top["model"]:
                top["options"] = {}  # another engine's, or another program's, options
        _merge(raw, extra)
        return _build(Recipe, raw, "")

    def data_for_iteration(self, which: str, k: int) -> DataRef:
        """Iteration k's entry of data.sft / data.rl: the k-th, or the last when the list is shorter."""
        refs = getattr(self.data, which)
        if not refs:
            raise RecipeError(f"data.{which} is empty")
        return refs[min(k, len(refs)) - 1]

    def role_options(self, role: str) -> dict[str, Any]:
        """The options `role`'s engine is built with: its own, plus, for an hf engine that names no
        device, the local backend's, so one `backend.options.device=cuda` puts the whole loop on a GPU.
        An hf evaluator takes each image size bound it does not set from the student (`pixel_bounds`):
        it judges the student's models, which are to see images as they were trained on them."""
        spec = getattr(self.roles, role)
        options = dict(spec.options)
        training_device = self.backend.options.get("device") if self.backend.name == "local" else None
        if spec.engine == "hf" and training_device is not None:
            options.setdefault("device", training_device)
        if role == "evaluator" and spec.engine == "hf":
            for name, value in self.pixel_bounds().items():
                if options.get(name) is None:
                    options[name] = value
        return options

    def pixel_bounds(self, role: str = "student") -> dict[str, int]:
        """A role's image size bounds (`roles.<role>.options.max_pixels` / `min_pixels`); the student's
        are what SFT and GRPO train with and write into every model folder they save."""
        spec = getattr(self.roles, role)
        options = spec.options if spec.engine == "hf" else {}
        return {name: options[name] for name in PIXEL_OPTIONS if options.get(name) is not None}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(to_dict(self), sort_keys=True).encode()).hexdigest()[:16]

    def work_digest(self, leave_out: Sequence[str] = ()) -> str:
        """The digest of what the stages compute: the recipe without the knobs in `MEMORY_ONLY`, so
        an interrupted stage resumed with `--force` and a smaller micro-batch keeps its checkpoint, and
        without keys in `ADDED_LATER` at their old behaviour, so an upgrade alone keeps it too. `leave_out`:
        keys that only choose among what a stage's saved work holds (rl_data's band among its samples)."""
        resolved = []
        for k in range(1, self.iterations + 1):  # each iteration as it runs, per_iteration applied
            raw = to_dict(self.for_iteration(k))
            raw.pop("per_iteration")
            for key in (*MEMORY_ONLY, *ADDED_LATER, *leave_out):
                *path, last = key.split(".")
                node = raw
                for part in path:
                    node = node[part]
                if key in MEMORY_ONLY or key in leave_out or node.get(last) == ADDED_LATER[key]:
                    node.pop(last, None)
            resolved.append(rebase_paths(raw, self.run_dir, "{run_dir}"))  # a moved run directory: the same work
        return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]


def rebase_paths(raw: Any, old: str, new: str) -> Any:
    """`raw` (recipe values) with the run directory `old` and every path inside it moved to `new`
    (other text, such as a `name` that happens to equal the folder's name, is left alone)."""
    if isinstance(raw, dict):
        return {k: new if k == "run_dir" and v == old else rebase_paths(v, old, new) for k, v in raw.items()}
    if isinstance(raw, list):
        return [rebase_paths(v, old, new) for v in raw]
    if isinstance(raw, str) and raw.startswith(old.rstrip("/") + "/"):
        return new + raw[len(old.rstrip("/")):]
    return raw


def load_recipe(path: str | Path, overrides: list[str] = (), *, check_paths: bool = True) -> Recipe:
    """Read, override, validate and resolve a recipe file. An error names the file (and the
    command-line overrides, which may be what is wrong) before the key."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"recipe not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_RecipeLoader) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the recipe as UTF-8") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys, got {type(raw).__name__}")
    try:
        return _resolve(raw, overrides, check_paths)
    except RecipeError as exc:
        given = f" with {' '.join(overrides)}" if overrides else ""
        raise RecipeError(f"{path}{given}: {exc}") from exc


def _resolve(raw: dict[str, Any], overrides: Sequence[str], check_paths: bool) -> Recipe:
    if isinstance(raw.get("per_iteration"), dict):  # `"2":` and `2:` are the same iteration (overrides write 2)
        raw["per_iteration"] = _int_keys(raw["per_iteration"], "per_iteration")
    for item in overrides:
        apply_override(raw, item)
    recipe = _build(Recipe, raw, "")
    if recipe.iterations < 1:
        raise RecipeError(f"iterations: must be >= 1, got {recipe.iterations}")
    runs = "1 iteration" if recipe.iterations == 1 else f"{recipe.iterations} iterations"
    for k, extra in recipe.per_iteration.items():
        if not isinstance(k, int) or k < 1:
            raise RecipeError(f"per_iteration.{k}: iterations are numbered from 1")
        for key, why in _NOT_PER_ITERATION.items():
            if _lookup_raw(extra, key) is not _MISSING:
                raise RecipeError(f"per_iteration.{k}.{key}: {why}")
        if k > recipe.iterations:  # e.g. `iterations=1` on the command line, for a quicker look
            log.warning("per_iteration.%s is not used: the recipe runs %s", k, runs)
        _build(Recipe, copy.deepcopy(extra), f"per_iteration.{k}")  # keys and types, named where they are
    for name in ("sft", "rl"):
        refs = getattr(recipe.data, name)
        if len(refs) > recipe.iterations:
            log.warning("data.%s has %d entries, one per iteration: entries %s are not used (the recipe runs %s)",
                        name, len(refs), ", ".join(str(k) for k in range(recipe.iterations + 1, len(refs) + 1)), runs)
    recipe = _expand_run_dir(recipe)  # first: a reward plugin may live in the run directory
    check_values(recipe)
    if check_paths:
        check_inputs(recipe)
    return recipe


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `key.sub=value` override to the raw recipe dict. The value is YAML (numbers, lists,
    `{k: v}` mappings, which are merged into the block they name), except for a text key, which takes
    the text as written (`roles.student.prompt=Answer: {question}`, `run_dir=runs/exp #3`)."""
    if "=" not in item:
        raise RecipeError(f"override {item!r} is not of the form key.sub=value")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    node: Any = raw
    schema: Any = Recipe
    for i, part in enumerate(parts):
        parent, schema = schema, _field_type(schema, part, ".".join(parts[: i + 1]))
        name: Any = part  # a key as the recipe's YAML has it: text, but for an iteration number
        if i == 1 and parts[0] == "per_iteration":
            schema, name = Recipe, _key(part)  # per_iteration.2.<any recipe key>
        if i == len(parts) - 1:
            value = _override_value(text, schema, key.strip())
            whole_iteration = i == 1 and parts[0] == "per_iteration"  # per_iteration.2=null: no changes for 2
            if value is None and dataclasses.is_dataclass(schema) and dataclasses.is_dataclass(parent) and not whole_iteration:
                raise RecipeError(f"override {key.strip()}={text.strip()}: {key.strip()} is a block of settings, "
                                  f"which null would reset to the defaults; set its keys ({key.strip()}.KEY=VALUE) "
                                  f"or leave the block out of the recipe for the defaults")
            if isinstance(value, dict) and isinstance(node.get(name), dict) and dataclasses.is_dataclass(_unwrap(schema)):
                _merge_block(node[name], value, schema, key.strip())  # `sft={steps: 5}` keeps the other SFT values
            else:
                node[name] = value  # a value, or a mapping of names (data.eval, options): replaced whole
            continue
        if node.get(name) is None:  # absent, or an empty block (`sft:` with only comments under it)
            node[name] = {}
        child = node[name]
        if not isinstance(child, dict):
            here = ".".join(parts[: i + 1])
            example = "[{path: ..., start: 0, stop: 100}]" if isinstance(child, list) else (
                "{path: ..., stop: 100}" if here.startswith("data.") else None)
            raise RecipeError(f"override {key}: {here} is {_kind(child)}, not a mapping"
                              + (f": set it whole, e.g. {here}={example}" if example else ""))
        node = child


def _override_value(text: str, schema: Any, key: str) -> Any:
    """A text key, or a data file's path, takes the text as written (YAML would cut `a #b` at the comment
    and read `a: {b}` as a mapping); a quoted string is unquoted; anything else is YAML."""
    text = text.strip()
    if not text:
        return ""
    if _unwrap(schema) is str:
        if text in ("null", "~") and type(None) in typing.get_args(schema):
            return None
        if text[0] in "'\"":
            try:
                unquoted = yaml.load(text, Loader=_RecipeLoader)
            except yaml.YAMLError:
                unquoted = None
            if isinstance(unquoted, str):
                return unquoted
        return text
    if _unwrap(schema) in (DataRef, list[DataRef]) and text[0] not in "{['\"" and text not in ("null", "~"):
        return text  # a data file's path, as written (`data.rl=runs/exp #3/rl.parquet`)
    try:
        return yaml.load(text, Loader=_RecipeLoader)
    except yaml.YAMLError as exc:
        raise RecipeError(f"override {key}: the value is not valid YAML ({exc})") from exc


def _unwrap(schema: Any) -> Any:
    """`Optional[X]` -> X."""
    if typing.get_origin(schema) in (Union, types.UnionType):
        return next(a for a in typing.get_args(schema) if a is not type(None))
    return schema


def _kind(value: Any) -> str:
    shown = repr(value)
    return "a list" if isinstance(value, list) else f"the value {shown if len(shown) <= 50 else shown[:46] + '...'}"


# Values that would otherwise fail only when their stage starts, or quietly do the wrong thing.
_CHOICES = {
    "sft.schedule": SCHEDULES,
    "grpo.schedule": SCHEDULES,
    "grpo.kl_penalty": tuple(name + plus for plus in ("", "+") for name in ("low_var_kl", "k3", "kl", "k1", "mse", "k2", "abs")),  # verl's
    "grpo.loss_agg_mode": ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"),
}
_AT_LEAST_ONE = (
    "caption.max_tokens", "caption.chunk_size", "distill.samples", "distill.max_tokens", "distill.chunk_size",
    "rl_data.samples", "rl_data.max_tokens", "evaluate.max_tokens", "regenerate.samples", "regenerate.max_tokens",
    "regenerate.chunk_size", "sft.steps", "sft.batch_size", "sft.grad_accum", "grpo.steps", "grpo.prompts_per_step",
    "grpo.max_tokens", "grpo.ppo_epochs", "grpo.mini_batches", "grpo.micro_batch_size", "reward.memory_mb",
)
_POSITIVE = {
    "sft.lr": "", "grpo.lr": "", "reward.timeout": " (seconds per reward call)",
    "grpo.temperature": " (GRPO samples its rollouts; log-probabilities are taken at the rollout temperature, as in verl)",
    "sft.max_grad_norm": " (gradients are clipped to this norm)", "grpo.max_grad_norm": " (gradients are clipped to this norm)",
    "reward.correct_at": " (a response is correct when its score is at least this; 0 would accept every answer)",
}
_NOT_NEGATIVE = ("caption.temperature", "distill.temperature", "regenerate.temperature", "evaluate.temperature",
                 "grpo.kl_coef", "grpo.clip_ratio_low", "grpo.clip_ratio_high", "sft.weight_decay", "grpo.weight_decay")
_TOP_P = ("distill.top_p", "regenerate.top_p", "grpo.top_p")  # a probability mass: 0 < top_p <= 1
_AT_LEAST_ONE_IF_SET = {  # key -> what null means
    "select.max_tokens": "no limit", "rl_data.max_problems": "no limit", "evaluate.max_problems": "no limit",
    "sft.max_length": "the student's context", "grpo.max_prompt_length": "the student's context less grpo.max_tokens",
}


def check_values(recipe: Recipe) -> None:
    """Choices, counts, engines, backend and reward names, and option names, for every iteration; an
    error names the key (under `per_iteration.k.` when that iteration sets it)."""
    if recipe.seed >= 2**32:  # would fail where a library takes it (numpy's limit), in GRPO at the earliest
        raise RecipeError(f"seed: must be below 2**32 (4294967296), got {recipe.seed}")
    for k in range(1, max([recipe.iterations, *recipe.per_iteration]) + 1):  # unused entries too: a later run may use them
        at = _Iteration(k, recipe.for_iteration(k), recipe.per_iteration.get(k, {}))
        for check in (_check_choices_and_counts, _check_batches, _check_sampling, _check_rl_band, _check_data_refs,
                      _check_roles, _check_backend, _check_rewards):
            check(at)
    _check_prepare(recipe.prepare)


@dataclass
class _Iteration:
    """Iteration k's recipe, and how a message names its keys (`per_iteration.k.key` where its entry sets one)."""

    k: int
    r: "Recipe"
    extra: dict[str, Any]

    def where(self, key: str) -> str:
        return _named(key, self.k, self.extra)

    def value(self, key: str) -> Any:
        return _lookup(self.r, key)

    def where_set(self, *keys: str) -> str:
        """A condition on several keys: the one this iteration's entry sets, if any."""
        return next((self.where(key) for key in keys if self.where(key) != key), keys[0])


def _check_choices_and_counts(at: _Iteration) -> None:
    from openvlt.backends import BACKENDS
    from openvlt.engines import ENGINES

    r = at.r
    for key, allowed in {**_CHOICES, "select.policy": POLICIES, "backend.name": tuple(BACKENDS),
                         **{f"roles.{n}.engine": ENGINES for n in ROLE_NAMES}}.items():
        if at.value(key) not in allowed:
            raise RecipeError(_not_one_of(at.where(key), at.value(key), allowed))
    for key in _AT_LEAST_ONE:
        if at.value(key) < 1:
            raise RecipeError(f"{at.where(key)}: must be >= 1, got {at.value(key)!r}")
    if at.value("reward.workers") < 1:
        raise RecipeError(f"{at.where('reward.workers')}: must be >= 1, got {at.value('reward.workers')} (the loop judges in worker "
                          "processes, each call with a hard time limit; workers=0, without one, is for debugging score_batch)")
    if at.value("grpo.rollouts") < 2:
        raise RecipeError(f"{at.where('grpo.rollouts')}: GRPO compares rollouts within a group: at least 2, got {at.value('grpo.rollouts')}")
    for key, why in _POSITIVE.items():
        if not at.value(key) > 0:
            raise RecipeError(f"{at.where(key)}: must be > 0, got {at.value(key)!r}{why}")
    for key in _NOT_NEGATIVE:
        if at.value(key) < 0:
            raise RecipeError(f"{at.where(key)}: must be >= 0, got {at.value(key)!r}")
    for key in _TOP_P:
        if not 0 < at.value(key) <= 1:
            raise RecipeError(f"{at.where(key)}: must be in (0, 1], got {at.value(key)!r}")
    for key, null in _AT_LEAST_ONE_IF_SET.items():
        if at.value(key) is not None and at.value(key) < 1:
            raise RecipeError(f"{at.where(key)}: must be >= 1, or null for {null}, got {at.value(key)!r}")
    if not 0 <= r.grpo.format_weight <= 1:
        raise RecipeError(f"{at.where('grpo.format_weight')}: must be in [0, 1] (the reward is (1 - w) x reward + w x format), "
                          f"got {r.grpo.format_weight!r}")


def _check_batches(at: _Iteration) -> None:
    """Batches that split as the trainers split them, and warm-ups shorter than training."""
    r = at.r
    if r.sft.batch_size % r.sft.grad_accum:
        raise RecipeError(f"{at.where_set('sft.grad_accum', 'sft.batch_size')}: sft.batch_size ({r.sft.batch_size}) must be a "
                          f"multiple of sft.grad_accum ({r.sft.grad_accum}): each micro-batch is batch_size / grad_accum examples")
    if r.grpo.prompts_per_step % r.grpo.mini_batches:
        raise RecipeError(f"{at.where_set('grpo.mini_batches', 'grpo.prompts_per_step')}: a step's {r.grpo.prompts_per_step} "
                          f"prompts do not split into {r.grpo.mini_batches} mini-batches of whole prompt groups: "
                          "grpo.prompts_per_step must be a multiple of grpo.mini_batches (as verl's data.train_batch_size "
                          "of actor.ppo_mini_batch_size)")
    for stage in ("sft", "grpo"):
        config, named = getattr(r, stage), at.where_set(f"{stage}.warmup_steps", f"{stage}.steps")
        if config.warmup_steps >= config.steps and (at.k == 1 or named.startswith("per_iteration")):  # once per setting
            log.warning("%s: %d warm-up steps of %d: the learning rate reaches %s.lr (%g) at the last step at best, "
                        "and never decays", named, config.warmup_steps, config.steps, stage, config.lr)


def _check_sampling(at: _Iteration) -> None:
    """Reflection markers that can cut, and several samples only where sampling is not greedy."""
    r = at.r
    blank = [m for m in r.select.reflection_markers if not isinstance(m, str) or not m.strip()]
    if blank:
        raise RecipeError(f"{at.where('select.reflection_markers')}: {blank[0]!r} is not a marker (an empty or blank one "
                          "would cut every trace at its first space)")
    stage, role = ("distill", "reasoner") if at.k == 1 else ("regenerate", "student")  # (what samples this iteration)
    greedy = not at.value(f"{stage}.temperature") > 0 and getattr(r.roles, role).engine != "program"  # (a program ignores it)
    for more, most in ((f"{stage}.samples", 1), *([("regenerate.retries", 0)] if stage == "regenerate" else [])):
        if greedy and at.value(more) > most:
            raise RecipeError(f"{at.where_set(f'{stage}.temperature', more)}: {stage}.temperature 0 decodes greedily, so "
                              f"{more}={at.value(more)} would only repeat one {role}'s answer (as many times over): set a "
                              f"temperature above 0, or {more}: {most}")


def _check_rl_band(at: _Iteration) -> None:
    """rl_data's pass-rate band: one that some pass rate can fall in."""
    r = at.r
    for key, outside, which in (("rl_data.min_pass", r.rl_data.min_pass < 0, "never"),
                                ("rl_data.max_pass", r.rl_data.max_pass > 1, "always")):
        if r.rl_data.enabled and outside and (at.k == 1 or at.where(key) != key):  # a way to include the end; or 100 for 1.0?
            log.warning("%s: %s is outside [0, 1], so problems the model %s solves are kept too (a pass rate is the "
                        "fraction of samples answered right: a percentage would be a mistake)", at.where(key), at.value(key), which)
    if r.rl_data.enabled and not r.rl_data.min_pass < r.rl_data.max_pass:
        raise RecipeError(f"{at.where_set('rl_data.max_pass', 'rl_data.min_pass')}: must be above rl_data.min_pass ({r.rl_data.min_pass}), "
                          f"got {r.rl_data.max_pass}: the band min_pass < pass rate < max_pass would keep nothing")
    n, greedy = r.rl_data.samples, not r.rl_data.temperature > 0
    achievable = (0, n) if greedy else range(n + 1)  # right answers among n samples, all judged (greedy ones agree)
    if r.rl_data.enabled and not any(r.rl_data.min_pass < j / n < r.rl_data.max_pass for j in achievable):
        if greedy:
            raise RecipeError(f"{at.where('rl_data.temperature')}: must be > 0, got {r.rl_data.temperature} (greedy samples "
                              "all agree, so every pass rate is 0 or 1 and the band keeps nothing)")
        rates = ", ".join(["0", *(f"{j}/{n}" for j in range(1, n))]) + " or 1"
        raise RecipeError(f"{at.where_set('rl_data.samples', 'rl_data.min_pass', 'rl_data.max_pass')}: with samples={n} a "
                          f"problem whose samples are all judged has a pass rate of {rates}, and none lies in the band "
                          f"{r.rl_data.min_pass} < pass rate < {r.rl_data.max_pass}, so it would keep nothing: take more "
                          "samples or widen the band")


def _check_data_refs(at: _Iteration) -> None:
    r = at.r
    for name in ("sft", "rl"):
        refs = getattr(r.data, name)
        if not refs:
            raise RecipeError(f"{at.where('data.' + name)}: no {name.upper()} problems given")
        for i, ref in enumerate(refs):
            if not ref.path.strip():
                raise RecipeError(f"{at.where('data.' + name)}: entry {i} has no path")
    if not r.data.eval:
        raise RecipeError(f"{at.where('data.eval')}: give at least one held-out set")
    for set_name, ref in r.data.eval.items():
        if not ref.path.strip():
            raise RecipeError(f"{at.where(f'data.eval.{set_name}')}: no path given")


def _check_roles(at: _Iteration) -> None:
    """Prompts, and engine options by name and type."""
    from openvlt.engines import check_engine_options, engine_options

    r = at.r
    for name in ROLE_NAMES:
        role = getattr(r.roles, name)
        prompt = (role.prompt or None) if name == "evaluator" else role.prompt  # the evaluator's null or "": the student's
        if prompt is not None:
            try:
                check_prompt(name, prompt, at.where(f"roles.{name}.prompt"))
            except ValueError as exc:
                raise RecipeError(str(exc)) from None
        if role.options or role.engine == "program":
            try:
                known = engine_options(role.engine, role.model)
            except ValueError as exc:
                raise RecipeError(f"{at.where(f'roles.{name}.model')}: {exc}") from exc
            for option, given in role.options.items():
                if option not in known:
                    raise RecipeError(_unknown(at.where(f"roles.{name}.options.{option}"), option, list(known),
                                               f"{role.engine} engine option"))
                coerced = _coerce(known[option], given, at.where(f"roles.{name}.options.{option}"))  # RecipeError names it
                if isinstance(given, str) and not isinstance(coerced, str):  # the engine gets the value as written
                    raise RecipeError(f"{at.where(f'roles.{name}.options.{option}')}: expected {_unwrap(known[option]).__name__}, "
                                      f"got {_show(given)}")
            try:
                check_engine_options(role.engine, role.model, role.options)
            except (ValueError, TypeError) as exc:
                raise RecipeError(f"{at.where(f'roles.{name}.options')}: {exc}") from exc


def _check_backend(at: _Iteration) -> None:
    from openvlt.backends import BACKENDS, backend_options

    r = at.r
    known = backend_options(r.backend.name)
    for option in r.backend.options:
        if option not in known:
            raise RecipeError(_unknown(at.where(f"backend.options.{option}"), option, known, f"{r.backend.name} backend option"))
    try:
        BACKENDS[r.backend.name](**r.backend.options)
    except ValueError as exc:  # a value the backend would refuse only when its first stage starts
        key = str(exc).split(":", 1)[0]  # "backend.options.NAME"
        raise RecipeError(at.where(key) + str(exc)[len(key):]) from exc


def _check_rewards(at: _Iteration) -> None:
    """reward.override and grpo.reward name plugins that load."""
    from rewards import RewardError, check_reward
    from rewards.compose import split_terms

    r = at.r
    if r.reward.override is not None:
        try:
            check_reward(r.reward.override, r.reward.memory_mb)
        except RewardError as exc:
            raise RecipeError(f"{at.where('reward.override')}: {exc}") from exc
        if at.k == 1 or at.where_set("reward.override", "reward.correct_at") != "reward.override":  # once per setting
            _warn_if_correctness_is_off(at.where_set("reward.override", "reward.correct_at"), r.reward.override,
                                        r.reward.correct_at)
    if r.grpo.reward is not None:  # the problem's own plugin ({reward}) is checked with the data
        try:
            parts = [part for _, part in split_terms(r.grpo.reward)]
            if parts.count(OWN_REWARD) > 1:
                raise RewardError(f"reward composition {r.grpo.reward!r} names {OWN_REWARD} twice")
            for part in parts:
                if part != OWN_REWARD:
                    check_reward(part, r.reward.memory_mb)
        except RewardError as exc:
            raise RecipeError(f"{at.where('grpo.reward')}: {exc}") from exc


def _warn_if_correctness_is_off(key: str, override: str, correct_at: float) -> None:
    """A weighted composition judges correctness by its sum against `correct_at`: weights that do not add up
    to it either accept an answer one part rejects (`math+format`: a wrong answer, well formatted, scores 1)
    or accept none (`0.7*math+0.2*format` reaches 0.9 at best). Parts are taken to score in [0, 1]."""
    from rewards.compose import split_terms

    terms = split_terms(override)
    if len(terms) == 1 and terms[0][0] == 1.0:
        return
    best = math.fsum(weight for weight, _ in terms)
    lightest_weight, lightest = min(terms)
    without_lightest = math.fsum([best, -lightest_weight])  # an answer that part scores 0
    if best < correct_at:
        log.warning("%s: an answer every part of %s scores 1 scores %g, below reward.correct_at (%g): none will count as "
                    "correct (make the weights add up to %g, or lower reward.correct_at)", key, override, best, correct_at, correct_at)
    elif len(terms) > 1 and without_lightest >= correct_at:
        log.warning("%s: the weights of %s add up to %g, so an answer %s scores 0 still reaches reward.correct_at (%g) and "
                    "counts as correct (raise reward.correct_at above %g, or change the weights: 0.9*math+0.1*format with "
                    "reward.correct_at 1.0 needs both parts right)", key, override, best, lightest, correct_at, without_lightest)


def _check_prepare(prepare: Prepare) -> None:
    """The prepare blocks are keyword arguments of the builders: a typo, a missing argument or a value the
    builder refuses would fail only when they run."""
    if prepare.toyworld is not None:
        from data_tools.toyworld.dataset import build_toyworld, toyworld_problem

        parameters = list(inspect.signature(build_toyworld).parameters.values())[1:]  # (the first is the folder)
        hints = typing.get_type_hints(build_toyworld)
        args = _check_arguments("prepare.toyworld", prepare.toyworld, {p.name: hints[p.name] for p in parameters})
        missing = [p.name for p in parameters if p.default is inspect.Parameter.empty and p.name not in args]
        if missing:
            raise RecipeError(f"prepare.toyworld.{missing[0]}: missing (the toy world needs {', '.join(missing)})")
        names = {"grid", "kinds", "levels"}
        problem = toyworld_problem(**{k: v for k, v in args.items() if k in names})
        if problem:
            raise RecipeError(f"prepare.toyworld.{problem}")
    if prepare.tiny_student is not None:
        from data_tools.tiny_model import TinySize

        args = _check_arguments("prepare.tiny_student", prepare.tiny_student, {**typing.get_type_hints(TinySize), "seed": int})
        problem = TinySize(**{k: v for k, v in args.items() if k not in ("out", "seed")}).problem()
        if problem:
            raise RecipeError(f"prepare.tiny_student: {problem}")


def _check_arguments(where: str, given: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
    """Names and types of a builder's keyword arguments (`out`, the folder, is every builder's), as the
    builder takes them: the text "4" is no int here (the builder is given the recipe's values as they are)."""
    known, checked = {**known, "out": str}, {}
    for key, value in given.items():
        if key not in known:
            raise RecipeError(_unknown(f"{where}.{key}", key, list(known)))
        kind = known[key]
        if typing.get_origin(kind) is tuple:  # YAML has lists, not tuples
            kind = list[typing.get_args(kind)[0]]
        checked[key] = _coerce(kind, value, f"{where}.{key}")
        if isinstance(value, str) and not isinstance(checked[key], str):
            raise RecipeError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got str {value!r}")
    return checked


def _named(key: str, k: int, extra: dict[str, Any]) -> str:
    """`key` as a message names it: `per_iteration.k.key` when iteration k's entry (`extra`) sets it."""
    return key if _lookup_raw(extra, key) is _MISSING else f"per_iteration.{k}.{key}"


def _lookup(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _not_one_of(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    close = _closest(value, allowed)
    return f"{where}: {value!r} is not one of {', '.join(allowed)}" + (f"; did you mean {close!r}?" if close else "")


def check_inputs(recipe: Recipe) -> None:
    """Every data file and model folder must exist, unless the prepare block builds it. A hub name
    (`org/name`) must be in the Hugging Face cache when offline; online, its download is announced."""
    from openvlt.models import lacks_chat_template, no_chat_template

    prepared = prepared_paths(recipe)
    missing, downloads = [], {}
    if not Path(recipe.run_dir).is_absolute() and _in_ray_job():
        raise RecipeError(
            f"run_dir: {recipe.run_dir!r} is relative, and this is a Ray job, which runs in a temporary copy of its "
            "working directory: the run would be lost with that copy, and a resubmitted job could not resume it. "
            "Give an absolute path on storage that outlives the job (--run-dir /shared/runs/NAME)")
    for k in range(1, recipe.iterations + 1):
        r = recipe.for_iteration(k)
        for key, device in _devices(r):
            if (problem := _device_problem(device)) is not None:
                raise RecipeError(f"{_named(key, k, recipe.per_iteration.get(k, {}))}: {problem}")
        named = functools.partial(_named, k=k, extra=recipe.per_iteration.get(k, {}))  # under per_iteration.k. if set there
        for name, refs in (("data.sft", r.data.sft), ("data.rl", r.data.rl)):
            missing += [f"{named(name)}: {ref.path}" for ref in refs if not _exists(ref.path, prepared)]
        for name, ref in r.data.eval.items():
            if not _exists(ref.path, prepared):
                missing.append(f"{named(f'data.eval.{name}')}: {ref.path}")
        for role in ROLE_NAMES:
            spec = getattr(r.roles, role)
            if spec.engine == "hf" and model_is_here(spec.model):
                reads_images = _reads_images(named(f"roles.{role}.model"), spec.model)  # first: it names a folder that is no model
                if lacks_chat_template(spec.model):
                    raise RecipeError(f"{named(f'roles.{role}.model')}: {no_chat_template(spec.model)}")
                if not reads_images:
                    if role in ("captioner", "student"):
                        raise RecipeError(text_only_model_error(role, spec.model, named(f"roles.{role}.model")))
                    if bounds := r.pixel_bounds(role):
                        raise RecipeError(f"{named(f'roles.{role}.options.{next(iter(bounds))}')}: "
                                          f"{spec.model} is a text-only model: it reads no images to bound")
            if spec.engine == "hf" and spec.model and Path(spec.model).is_file():
                missing.append(f"{named(f'roles.{role}.model')}: {spec.model} (a file, not a model folder)")
            if spec.engine != "hf" or not spec.model or _exists(spec.model, prepared):
                continue
            if _looks_local(spec.model):
                missing.append(f"{named(f'roles.{role}.model')}: {spec.model}")
            elif not _in_hub_cache(spec.model):
                if _hub_offline():
                    missing.append(f"{named(f'roles.{role}.model')}: {spec.model} (no such folder, and not in the Hugging Face "
                                   "cache, which is all HF_HUB_OFFLINE=1 allows)")
                else:
                    downloads[f"roles.{role}.model"] = spec.model
    if not recipe.roles.student.model:
        raise RecipeError("roles.student.model: the base student model is required")
    if recipe.roles.evaluator.model:
        raise RecipeError("roles.evaluator.model: leave it empty; the evaluator evaluates each checkpoint in turn "
                          "(set its engine and options only)")
    if missing:
        raise RecipeError("missing input(s):\n  " + "\n  ".join(dict.fromkeys(missing)))
    for key, model in downloads.items():
        log.warning("%s: %r is no local folder and not in the Hugging Face cache: the hf engine will download it "
                    "from the hub (write './%s' if you meant a folder)", key, model, model)


def text_only_model_error(role: str, model: str, key: str | None = None) -> str:
    """`key`: the recipe key that names `model` (by default the role's; the evaluator runs the student's)."""
    key = key or ("roles.captioner.model" if role == "captioner" else "roles.student.model")
    return (f"{key}: {model} is a text-only model, but the {role} reads the problems' images: bind an image-text "
            "model (a Qwen2.5-VL folder or hub name)")


def model_is_here(model: str | None) -> bool:
    """A model folder on this machine, or a hub name already in the Hugging Face cache."""
    return bool(model) and (Path(model).is_dir() or (not _looks_local(model) and _in_hub_cache(model)))


def _reads_images(key: str, model: str) -> bool:
    """Whether the folder's model takes images; a folder whose config cannot be read (no or a broken
    config.json, a model type this transformers does not know, one that needs its own code) is refused
    here, naming the key, rather than by the stage that loads it, maybe hours into the run."""
    from openvlt.models import UnreadableModelFolder, reads_images

    try:
        return reads_images(model)
    except UnreadableModelFolder as exc:
        raise RecipeError(f"{key}: {exc}") from None
    except (OSError, ValueError) as exc:  # transformers' own message: its first line names the problem
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RecipeError(f"{key}: {model} is not a model folder transformers can read: {reason}") from None


def _in_ray_job() -> bool:
    """Started by `ray job submit` (Ray hands the entrypoint its job config in this variable)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def _devices(recipe: Recipe) -> list[tuple[str, Any]]:
    """The devices a recipe asks for: (key, value) of the training backend's and the engines' `device`."""
    found = [("backend.options.device", recipe.backend.options["device"])] if "device" in recipe.backend.options else []
    for role in ROLE_NAMES:
        options = getattr(recipe.roles, role).options
        if "device" in options:
            found.append((f"roles.{role}.options.device", options["device"]))
    return found


def _device_problem(device: Any) -> str | None:
    """Why this machine cannot run on `device`, or None. Imports torch only for a device other than "cpu"."""
    if device == "cpu":
        return None
    import torch

    try:
        wanted = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        return f"{device!r} is not a torch device ({exc})"
    if wanted.type == "cpu":
        return None
    have = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if have is None or have.type != wanted.type:
        return (f"{device!r}: this torch ({torch.__version__}) sees no {wanted.type} device on this machine "
                f"(it sees {'a ' + have.type + ' device' if have else 'the CPU only'})")
    if wanted.index is not None and wanted.index >= torch.accelerator.device_count():
        return f"{device!r}: this machine has {torch.accelerator.device_count()} {wanted.type} device(s), numbered from 0"
    return None


def prepared_paths(recipe: Recipe) -> dict[str, str]:
    """What the prepare block will build: name -> output path."""
    out = {}
    if recipe.prepare.toyworld is not None:
        out["toyworld"] = str(recipe.prepare.toyworld.get("out", f"{recipe.run_dir}/data/toyworld"))
    if recipe.prepare.tiny_student is not None:
        out["tiny_student"] = str(recipe.prepare.tiny_student.get("out", f"{recipe.run_dir}/models/student"))
    return out


def changes_since(frozen: dict[str, Any], recipe: Recipe) -> list[str]:
    """What differs between a run's frozen recipe (as read from its recipe.yaml) and `recipe`, as
    "key: old -> new" lines. Keys this version added count with their defaults (an upgrade alone is
    no change); a key the frozen file has and this version lacks is a change (taken with --force)."""
    removed: list[str] = []
    known = _known_part(frozen, Recipe, "", removed)
    try:
        old = to_dict(_build(Recipe, known, ""))
    except RecipeError as exc:  # a value this version reads differently: report it, do not lock the directory
        return removed + [f"recipe.yaml as frozen: {exc}"]
    new = to_dict(recipe)
    order = [list(d["data"]["eval"]) for d in (old, new)]
    reordered = [f"data.eval: in the order {order[0]} -> {order[1]} (the first is the summary's headline set)"] if (
        order[0] != order[1] and sorted(order[0]) == sorted(order[1])) else []
    return removed + _diff(old, new) + reordered


def _known_part(raw: Any, cls: Any, where: str, removed: list[str]) -> Any:
    """`raw` without the keys `cls` (a recipe dataclass) does not have, each noted in `removed`."""
    if not isinstance(raw, dict) or not dataclasses.is_dataclass(cls):
        return raw
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in raw.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in hints:
            removed.append(f"{full}: {value!r} -> (no such key in this version)")
        else:
            out[key] = _known_part(value, _unwrap(hints[key]), full, removed)
    return out


def _diff(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
        return out
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False, allow_unicode=True, width=110)


# ----------------------------------------------------------------------------- building & checking
def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        name = _key(key)
        full = f"{where}.{name}" if where else str(name)
        if name not in names:
            raise RecipeError(_unknown(full, name, names))
        kwargs[name] = _coerce(hints[name], value, full)
    return cls(**kwargs)


def _coerce(kind: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if dataclasses.is_dataclass(kind):
        if kind is DataRef and isinstance(value, str):
            return DataRef(path=value)
        return _build(kind, value, where)
    if origin is list:
        items = value if isinstance(value, list) else [value] if kind == list[DataRef] else None
        if items is None:
            raise RecipeError(f"{where}: expected a list, got {_show(value)}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {_show(value)}")
        return {_coerce(args[0], k, where): _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads `1e-5` (no dot) as a string; `1e400` is inf
    if kind is float and isinstance(value, float) and not math.isfinite(value):  # YAML's .nan and .inf
        raise RecipeError(f"{where}: must be a finite number, got {value!r}")
    if kind is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)  # mapping keys such as per_iteration's
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecipeError(f"{where}: expected {kind.__name__}, got {_show(value)}")
    if kind is int and value < 0:  # every int of a recipe is a count, a number of steps or a seed
        raise RecipeError(f"{where}: must be >= 0, got {_show(value)}")
    return value


def _field_type(schema: Any, part: str, where: str) -> Any:
    """The schema below `part` (for overrides): a dataclass field, a dict value, or Any."""
    schema = _unwrap(schema)
    if dataclasses.is_dataclass(schema):
        hints = typing.get_type_hints(schema)
        if part not in hints:
            raise RecipeError(_unknown(where, part, list(hints)))
        return hints[part]
    if typing.get_origin(schema) is dict:
        return typing.get_args(schema)[1]
    return Any


def _unknown(full: str, name: Any, names: list[str], what: str = "recipe key") -> str:
    close = _closest(name, names)
    prefix = full.rsplit(".", 1)[0] + "." if "." in full else ""
    hint = f"; did you mean '{prefix}{close}'?" if close else f"; valid keys here: {', '.join(names)}"
    return f"unknown {what} '{full}'{hint}"


def _closest(name: Any, names: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.5)
    return close[0] if close else None


def _key(key: Any) -> Any:
    return int(key) if isinstance(key, str) and key.isdigit() else key


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        key = _key(key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _merge_block(base: dict, extra: dict, schema: Any, where: str) -> None:
    """An override's mapping merged into the block it names, block by block; a mapping of names under it
    (`data.eval`, an `options` block) is replaced whole, as when the override names it (`data={eval: {a: x}}`
    evaluates on `a` alone, like `data.eval={a: x}`)."""
    for key, value in extra.items():
        inner = _field_type(schema, str(key), f"{where}.{key}")
        if isinstance(value, dict) and isinstance(base.get(key), dict) and dataclasses.is_dataclass(_unwrap(inner)):
            _merge_block(base[key], value, inner, f"{where}.{key}")
        else:
            base[key] = value


def _expand_run_dir(recipe: Recipe) -> Recipe:
    if not recipe.run_dir and not recipe.name.strip():  # runs/ itself would hold this run's stages beside every other run
        raise RecipeError("name: empty; the run directory is runs/<name>: give the run a name (or a run_dir)")
    if not recipe.run_dir and not os.path.normpath(f"runs/{recipe.name}").startswith(f"runs{os.sep}"):
        raise RecipeError(f"name: {recipe.name!r} leads out of runs/; the run directory is runs/<name>: name the run "
                          "plainly (`exp/seed1` is fine), or give a run_dir")
    run_dir = os.path.normpath(_home(recipe.run_dir or f"runs/{recipe.name}"))  # `runs/x/` and `runs/x` are one run

    def expand(value: Any) -> Any:
        if isinstance(value, str):
            return _home(value).replace("{run_dir}", run_dir)
        if isinstance(value, list):
            return [expand(v) for v in value]
        if isinstance(value, dict):
            return {k: expand(v) for k, v in value.items()}
        return value

    raw = expand(to_dict(recipe))
    raw["run_dir"] = run_dir
    return _build(Recipe, raw, "")


def _home(value: str) -> str:
    """A path that starts at a home folder (`~/runs/x`, as a shell leaves it after `--run-dir=`), expanded."""
    return os.path.expanduser(value) if _HOME_RE.match(value) else value


_HOME_RE = re.compile(r"~[\w.-]*/")  # (not "~" alone: a stop string, say)


class _RecipeLoader(yaml.SafeLoader):
    """safe_load, plus: a key given twice in one mapping is an error (PyYAML keeps the last one
    silently), and `1e-5` is a number, as in YAML 1.2 (YAML 1.1 reads it as text)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: explicit keys may override merged ones
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                raise yaml.constructor.ConstructorError(None, None, f"a key must be a plain value, got {key!r}", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (lines {seen[key]} and "
                    f"{key_node.start_mark.line + 1}); the second would silently replace the first", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789."))

_MISSING = object()
_NOT_PER_ITERATION = {  # keys an iteration cannot change: they are read once, for the whole run
    "name": "the run's name is one for all iterations", "run_dir": "one run directory holds every iteration",
    "iterations": "set the number of iterations at the top level", "prepare": "prepare runs once, before iteration 1",
    "per_iteration": "per_iteration entries do not nest",
    "data.eval": "the held-out sets are the same for every iteration: the summary compares the base model and every "
                 "stage on them (add a set with --force --redo '*/evaluate')",
    "roles.student.model": "every iteration's SFT starts from the base student (roles.student.model), as in "
                           "OpenVLThinker; later iterations' data come from the previous GRPO model",
    "roles.evaluator.model": "leave it empty; the evaluator evaluates each checkpoint in turn (set its engine and "
                             "options only)",
    **{key: "every checkpoint is evaluated the same way: the summary compares the base model and every stage on the "
            "same problems, prompt and decoding (set it at the top level, then --force --redo '*/evaluate')"
       for key in ("evaluate.max_problems", "evaluate.temperature", "evaluate.max_tokens", "roles.evaluator.prompt",
                   "roles.evaluator.system")},
}


def _lookup_raw(raw: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(raw, dict) or part not in raw:
            return _MISSING
        raw = raw[part]
    return raw


def _int_keys(mapping: dict, where: str) -> dict:
    out: dict = {}
    for key, value in mapping.items():
        if _key(key) in out:
            raise RecipeError(f"{where}.{key}: given twice (as {key!r} and {_key(key)!r})")
        out[_key(key)] = value
    return out


def _exists(path: str, prepared: dict[str, str]) -> bool:
    here = Path(path).exists() or is_shard_set(path) and bool(pattern_matches(Path(path)))
    return here or any(Path(path).is_relative_to(p) or path == p for p in prepared.values())


def _in_hub_cache(model: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "config.json"), str)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _looks_local(model: str) -> bool:
    """A hub name ("Qwen/Qwen2.5-VL-7B-Instruct") is `org/name` in the hub's alphabet; anything else
    (`./x`, `/abs/x`, `a/b/c`, `C:/x`, an existing folder) is a path."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if model.startswith((".", "/", "~")) or model.count("/") != 1 or Path(model).exists():
        return True
    try:
        validate_repo_id(model)
    except HFValidationError:
        return True
    return False