"""What a run shows a person: summary.json, a printed table, and report.html.

summary.json (accuracy on the recipe's first held-out set):

    {"eval_set": "toyworld", "base": {"accuracy": a},
     "iterations": [{"iter": 1, "sft": {"accuracy": a}, "grpo": {"accuracy": a}, "data": {...yields...}}, ...]}

report.html is one self-contained file: accuracy per checkpoint, SFT loss and GRPO reward curves,
data yields per iteration, sample traces with their images, and stage timings.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

from openvlt.recipe import Recipe
from openvlt.files import atomic_write, jsonl_rows
from openvlt.workspace import format_seconds, quarantine_file

log = logging.getLogger(__name__)

_YIELD_KEYS = ("in", "traces", "correct_traces", "trace_yield", "out", "problem_yield", "no_correct", "too_long",
               "truncated", "truncation_rejected", "kept_previous", "previous_other_problem",
               "previous_rejected", "quarantined", "reward_errors", "reward_timeouts")


def write_summary(run_dir: Path, recipe: Recipe) -> dict[str, Any]:
    manifest = _manifest(run_dir)
    headline = next(iter(recipe.data.eval))
    summary: dict[str, Any] = {"run": recipe.name, "eval_set": headline, "base": _accuracies(run_dir / "base", headline),
                               "iterations": []}
    for k in range(1, recipe.iterations + 1):
        it = f"iter_{k}"
        select = manifest.get(f"{it}/select", {}).get("counts", {})
        rl = manifest.get(f"{it}/rl_data", {}).get("counts", {})
        grpo = manifest.get(f"{it}/grpo", {}).get("counts", {})
        sft = manifest.get(f"{it}/sft", {}).get("counts", {})
        regenerated = manifest.get(f"{it}/regenerate", {}).get("counts", {})
        data = {f"select_{key}": select[key] for key in _YIELD_KEYS if key in select}
        data |= {f"regenerate_{key}": n for key, n in regenerated.items() if key.startswith("retried_")}
        data |= {"rl_problems_in": rl.get("in"), "rl_problems_kept": rl.get("out"), "rl_problems_unjudged": rl.get("unjudged"),
                 "grpo_reward_start": grpo.get("reward_start"), "grpo_reward_end": grpo.get("reward_end"),
                 "sft_too_long": sft.get("too_long"), "grpo_too_long": _total(rl.get("too_long"), grpo.get("too_long"))}
        # (left out: over their limit; rl_data leaves out the RL problems GRPO would, when it runs)
        summary["iterations"].append({
            "iter": k, "sft": _accuracies(run_dir / it / "sft", headline), "grpo": _accuracies(run_dir / it / "grpo", headline),
            "data": data,
        })
    data_blocks = [recipe.for_iteration(k).data for k in range(1, recipe.iterations + 1)]  # (an iteration may name its own)
    read = {quarantine_file(run_dir, ref) for d in data_blocks for ref in [*d.sft, *d.rl, *d.eval.values()]}
    summary["quarantined_rows"] = {str(q.relative_to(run_dir)): jsonl_rows(q)  # rows of the recipe's data files set aside
                                   for q in sorted((run_dir / "quarantine").glob("*.jsonl")) if q in read}
    summary["seconds"] = round(sum(s.get("seconds", 0) for key, s in manifest.items() if _iteration(key) <= recipe.iterations), 1)
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _iteration(stage: str) -> int:
    """The iteration a stage belongs to (0: before the first); a run whose recipe now asks for fewer
    iterations (`--force`) has stages past them."""
    head = stage.split("/")[0]
    return int(head[5:]) if head.startswith("iter_") and head[5:].isdigit() else 0


def _total(*counts: int | None) -> int | None:
    """The sum of the counts that were made (None when none was)."""
    made = [n for n in counts if n is not None]
    return sum(made) if made else None


def _dash(count: int | None) -> str:
    return "-" if count is None else str(count)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table (what `openvlt run` prints at the end)."""
    def acc(entry: dict[str, Any]) -> str:
        return "-" if entry.get("accuracy") is None else f"{entry['accuracy']:.3f}"

    lines = [f"accuracy on held-out set '{summary['eval_set']}'",
             f"{'stage':<10}{'SFT':>8}{'GRPO':>8}{'SFT rows':>10}{'trace yield':>13}{'RL problems':>13}",
             f"{'base':<10}{acc(summary['base']):>8}"]
    for it in summary["iterations"]:
        d = it["data"]
        yield_ = "-" if d.get("select_trace_yield") is None else f"{d['select_trace_yield']:.2f}"
        lines.append(f"{'iter ' + str(it['iter']):<10}{acc(it['sft']):>8}{acc(it['grpo']):>8}"
                     f"{_dash(d.get('select_out')):>10}{yield_:>13}{_dash(d.get('rl_problems_kept')):>13}")
    lines += _other_sets_table(summary)
    for it in summary["iterations"]:
        d = it["data"]
        if d.get("sft_too_long") or d.get("grpo_too_long"):
            lines.append(f"iter {it['iter']}: left out as too long: {d.get('sft_too_long') or 0} SFT example(s) "
                         f"(sft.max_length), {d.get('grpo_too_long') or 0} RL problem(s) (grpo.max_prompt_length)")
    for path, n in summary.get("quarantined_rows", {}).items():
        lines.append(f"{n} bad input row(s) set aside in {path}")
    unjudged = [(label, entry["unjudged_answers"]) for label, entry in _evaluations(summary) if entry.get("unjudged_answers")]
    if unjudged:
        lines.append("answers the reward could not judge (errors, timeouts; counted wrong): "
                     + ", ".join(f"{label} {n}" for label, n in unjudged) + " (see each eval.json)")
    lines.append(f"total stage time {summary['seconds']:.0f} s")
    return "\n".join(lines)


def _other_sets_table(summary: dict[str, Any]) -> list[str]:
    """The held-out sets after the first, one row each, one column per checkpoint (none: no lines)."""
    points = _evaluations(summary)
    names = list(dict.fromkeys(name for _, entry in points for name in entry.get("all_sets", {})
                               if name != summary["eval_set"]))
    if not names:
        return []
    width = max(10, *(len(name) + 2 for name in names))
    lines = [f"{'other sets':<{width}}" + "".join(f"{label:>8}" for label, _ in points)]
    for name in names:
        cells = [entry.get("all_sets", {}).get(name) for _, entry in points]
        lines.append(f"{name:<{width}}" + "".join(f"{'-' if a is None else f'{a:.3f}':>8}" for a in cells))
    return lines


def write_report(run_dir: Path, recipe: Recipe) -> Path:
    summary = json.loads((run_dir / "summary.json").read_text())
    manifest, last_eval = _manifest(run_dir), _last_eval(run_dir, recipe)
    parts = [
        f"<h1>openvlt run <code>{html.escape(recipe.name)}</code></h1>",
        f"<p>recipe {recipe.digest()} &middot; {recipe.iterations} iterations &middot; "
        f"{summary['seconds']:.0f} s of stage time &middot; backend {html.escape(recipe.backend.name)}</p>",
        "<h2>Summary</h2>", f"<pre>{html.escape(format_summary(summary))}</pre>",
        "<h2>Accuracy per checkpoint</h2>", _img(_accuracy_plot(summary)),
        "<h2>Training curves</h2>", _img(_curves_plot(run_dir, recipe.iterations)),
        "<h2>Data yields</h2>", _img(_yields_plot(summary)), _yields_table(summary),
        "<h2>Accuracy by question kind (last checkpoint)</h2>", _by_kind_table(last_eval),
        "<h2>Sample SFT traces</h2>", _sft_samples(run_dir, recipe.iterations),
        "<h2>Sample answers of the last checkpoint</h2>", _eval_samples(last_eval),
        "<h2>Stages</h2>", _stage_table(manifest),
    ]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top}pre{background:#f6f6f6;padding:8px}"
             ".trace{font-family:monospace;white-space:pre-wrap;max-width:700px}img.scene{image-rendering:pixelated;width:84px}")
    page = f"<!doctype html><meta charset='utf-8'><title>openvlt {html.escape(recipe.name)}</title><style>{style}</style>" + "".join(parts)
    out = run_dir / "report.html"
    atomic_write(out, page)
    return out


# ----------------------------------------------------------------------------- pieces
def _manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "manifest.json"
    return json.loads(path.read_text())["stages"] if path.exists() else {}


def _accuracies(stage_dir: Path, headline: str) -> dict[str, Any]:
    path = stage_dir / "eval.json"
    if not path.exists():
        return {"accuracy": None}
    sets = json.loads(path.read_text())["sets"]
    if headline not in sets:  # data.eval changed with --force after this evaluation ran
        stage = stage_dir.name if stage_dir.name == "base" else f"{stage_dir.parent.name}/{stage_dir.name}"
        log.warning("%s has no accuracy on %r (evaluated on: %s): `--redo %s/evaluate` adds it (`--redo '*/evaluate'` "
                    "to every evaluation; nothing is trained again)", path, headline, ", ".join(sets), stage)
        return {"accuracy": None, "all_sets": {k: v["accuracy"] for k, v in sets.items()}}
    unjudged = sets[headline].get("reward_errors", 0) + sets[headline].get("reward_timeouts", 0)  # (under its accuracy)
    return {"accuracy": sets[headline]["accuracy"], "all_sets": {k: v["accuracy"] for k, v in sets.items()},
            "unjudged_answers": unjudged}  # reward errors and timeouts: counted wrong, never silently


def _checkpoints(summary: dict[str, Any]) -> list[tuple[str, float | None]]:
    return [(label, entry["accuracy"]) for label, entry in _evaluations(summary)]


def _evaluations(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    points = [("base", summary["base"])]
    for it in summary["iterations"]:
        points += [(f"SFT {it['iter']}", it["sft"]), (f"GRPO {it['iter']}", it["grpo"])]
    return points


def _figure(width: float = 7, height: float = 3, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height))


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _img(png: bytes, css: str = "") -> str:
    return f"<img {css} src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _accuracy_plot(summary: dict[str, Any]) -> bytes:
    """One line per iteration, SFT -> GRPO, each joined (dotted) to the base student its SFT starts from."""
    fig, ax = _figure()
    base = summary["base"]["accuracy"]
    if base is not None:
        ax.plot([0], [base], marker="o", color="black")
    for it in summary["iterations"]:
        points = [(x, acc) for x, acc in ((2 * it["iter"] - 1, it["sft"]["accuracy"]), (2 * it["iter"], it["grpo"]["accuracy"]))
                  if acc is not None]
        if points:
            (line,) = ax.plot(*zip(*points), marker="o", label=f"iter {it['iter']}")
            if base is not None:
                ax.plot([0, points[0][0]], [base, points[0][1]], linestyle=":", linewidth=1, color=line.get_color())
    ax.set_xticks(range(len(_checkpoints(summary))), [label for label, _ in _checkpoints(summary)])
    if summary["iterations"]:
        ax.legend()
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"accuracy ({summary['eval_set']})")
    ax.grid(alpha=0.3)
    return _png(fig)


def _curves_plot(run_dir: Path, iterations: int) -> bytes:
    fig, (left, right) = _figure(10, 3, ncols=2)
    for k in range(1, iterations + 1):
        for ax, stage, key in ((left, "sft", "loss"), (right, "grpo", "reward")):
            path = run_dir / f"iter_{k}" / stage / "model" / "metrics.jsonl"
            if path.exists():
                rows = [row for line in path.read_text().splitlines() if (row := json.loads(line)).get(key) is not None]
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=f"iter {k}", linewidth=1)
    left.set(title="SFT loss", xlabel="step", yscale="log")
    right.set(title="GRPO mean reward", xlabel="step")
    for ax in (left, right):
        if ax.lines:  # no curve yet (the stage has not run): no legend
            ax.legend()
        ax.grid(alpha=0.3)
    return _png(fig)


def _yields_plot(summary: dict[str, Any]) -> bytes:
    fig, ax = _figure()
    labels = [f"iter {it['iter']}" for it in summary["iterations"]]
    series = [("traces", "select_traces"), ("correct traces", "select_correct_traces"), ("SFT rows", "select_out"),
              ("RL problems", "rl_problems_kept")]
    width = 0.8 / len(series)
    for i, (name, key) in enumerate(series):
        ax.bar([x + i * width for x in range(len(labels))], [it["data"].get(key) or 0 for it in summary["iterations"]],
               width, label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels)
    ax.legend()
    return _png(fig)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _yields_table(summary: dict[str, Any]) -> str:
    keys = sorted({k for it in summary["iterations"] for k in it["data"]})
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return _table(["iteration", *keys], [[it["iter"], *[fmt(it["data"].get(k)) for k in keys]] for it in summary["iterations"]])


def _last_eval(run_dir: Path, recipe: Recipe) -> dict[str, Any] | None:
    for k in range(recipe.iterations, 0, -1):
        for stage in ("grpo", "sft"):
            path = run_dir / f"iter_{k}" / stage / "eval.json"
            if path.exists():
                return json.loads(path.read_text())
    path = run_dir / "base" / "eval.json"
    return json.loads(path.read_text()) if path.exists() else None


def _by_kind_table(report: dict[str, Any] | None) -> str:
    if not report:
        return "<p>no evaluation yet</p>"
    rows = [[html.escape(name), html.escape(kind), f"{acc:.3f}"]
            for name, s in report["sets"].items() for kind, acc in s["by_kind"].items()]
    return _table(["set", "kind", "accuracy"], rows)


def _sft_samples(run_dir: Path, iterations: int, per_iteration: int = 3) -> str:
    from openvlt.records import read_records

    rows = []
    for k in range(1, iterations + 1):
        path = run_dir / f"iter_{k}" / "sft.parquet"
        if not path.exists():
            continue
        records = read_records(path, stop=per_iteration)  # (the rows shown, not a file of 100k traces)
        for i in range(len(records)):
            rec = records[i]
            image = _img(rec["images"][0], "class='scene'") if rec["images"] else ""
            origin = f"{rec.get('trace_source', '')}, sample {rec.get('sample_index', '')}" + (
                f" (kept from {rec['selected_in']})" if rec.get("selected_in") not in (None, f"iter_{k}") else "")
            rows.append([f"iter {k}", html.escape(rec["id"]), image, html.escape(rec["question"]), html.escape(rec["answer"]),
                         f"<div class='trace'>{html.escape(rec['response'])}</div>", html.escape(origin)])
    return _table(["iteration", "id", "image", "question", "answer", "selected trace", "written by"], rows) if rows else "<p>none yet</p>"


def _eval_samples(report: dict[str, Any] | None) -> str:
    """Every answer the evaluation kept (`evaluate.samples_kept`: wrong ones and right ones)."""
    if not report:
        return "<p>no evaluation yet</p>"
    rows = [[html.escape(name), html.escape(s["id"]), html.escape(s["question"]), html.escape(s["answer"]),
             f"<div class='trace'>{html.escape(s['response'])}</div>", "error" if s["score"] is None else f"{s['score']:.2f}"]
            for name, st in report["sets"].items() for s in st["samples"]]
    return f"<p>model: <code>{html.escape(report['model'])}</code></p>" + _table(
        ["set", "id", "question", "answer", "response", "score"], rows)


def _stage_table(manifest: dict[str, Any]) -> str:
    rows = [[html.escape(key), s.get("status", ""), s.get("attempts", ""), format_seconds(s.get("seconds")),
             html.escape(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in s.get("counts", {}).items() if not isinstance(v, (dict, list))))]
            for key, s in manifest.items()]
    return _table(["stage", "status", "attempts", "seconds", "counts"], rows)
