"""``python -m parrot.report RUN_DIR [--out PATH]``: one static HTML page of a ``parrot.train`` run.

The page (default ``RUN_DIR/report.html``) needs no server and loads nothing from outside: every
figure is a PNG embedded as a ``data:image/png;base64`` URI, the style sheet is inline and there is
no script. It reads what ``parrot.train`` writes under its ``output_dir`` (the layout: :mod:`parrot.run_dir`):

1. training curves, from the TensorBoard event files of accelerate's tracker
   (``**/events.out.tfevents*``): per-reward batch mean of R[:, k] with a ±std band, |P|/N
   (``pareto/selected_fraction``), the T2I and expander losses, KL and gradient norms, and with
   ``evaluation.every`` each reward's held-out mean on its panel; a run logged without TensorBoard shows the
   rewards and |P|/N of its ``curves.jsonl``;
2. the held-out table, from ``evaluation.json`` (mean ± std over the N held-out images of each
   reward for the plain base model where the run recorded it, before and after, and Δ), and a
   per-image table;
3. the Pareto plot of the held-out scores, before vs after (:func:`parrot.plots.pairwise_front_plot`);
4. one image grid per checkpoint, from ``samples/iteration-NNNNNN.png`` + ``.json``, each image
   captioned with its original prompt c, expansion ĉ, conditioning prompt "<k>, ĉ", rewards and
   whether it was in the batch's non-dominated set P.

Notation: R is a reward matrix (N images × K rewards); "before" is the base model (LoRA off, SFT
expander), "after" the trained one. A part the run has not written (still training, logging off)
is shown as "not available: <why>"; a RUN_DIR that holds none of these parts is refused.
"""

from __future__ import annotations

import base64
import html
import io
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402  (after parrot.plots, which selects the Agg backend)
import numpy as np
from matplotlib.ticker import MaxNLocator  # noqa: E402

from parrot.plots import pairwise_front_plot
from parrot.run_dir import CURVES_FILE, RunDir, open_run, read_curves, read_evaluation_json, sample_records
from parrot_base.cli import UsageError, run_cli
from parrot_base.config import parse_config

__all__ = [
    "ReportConfig",
    "Unavailable",
    "read_scalars",
    "read_evaluation",
    "curve_panel_tags",
    "reward_curves_png",
    "evaluation_table_html",
    "per_image_table_html",
    "pareto_plot_png",
    "sample_grids_html",
    "report_html",
    "write_report",
    "main",
]

EVENT_GLOB = "events.out.tfevents*"


@dataclass
class ReportConfig:
    """Write a static HTML report of a parrot.train run."""

    run_dir: Path | None = field(default=None, metadata={"help": "the run's --output_dir (also the first positional argument)"})
    out: Path | None = field(default=None, metadata={"help": "HTML file to write; RUN_DIR/report.html when unset"})


class Unavailable(Exception):
    """A part of the report the run has not written; the message says why."""


# ----- reading the run ------------------------------------------------------------------------------
def read_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag → (steps, values) from every event file under ``run_dir``.

    A step logged twice (a run resumed from an earlier checkpoint) keeps its latest write.
    """
    # tensorboard's own reader: the event-file format (TFRecord + protobuf) is not ours to parse
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.rglob(EVENT_GLOB))
    if not files:
        raise Unavailable(
            f"no TensorBoard event files ({EVENT_GLOB}) under {run_dir}: the run logged with --logging.log_with none, or has not started"
        )
    latest: dict[str, dict[int, tuple[float, float]]] = {}
    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            per_step = latest.setdefault(tag, {})
            for event in accumulator.Scalars(tag):
                if event.step not in per_step or event.wall_time >= per_step[event.step][0]:
                    per_step[event.step] = (event.wall_time, event.value)
    if not latest:
        raise Unavailable(f"the event files under {run_dir} hold no scalars yet (no iteration finished)")
    curves = {}
    for tag, per_step in latest.items():
        steps = sorted(per_step)
        curves[tag] = (np.array(steps), np.array([per_step[s][1] for s in steps], dtype=float))
    return curves


def read_evaluation(run: RunDir) -> dict:
    """``evaluation.json`` with its per-image scores as (N, K) arrays, checked for shape."""
    path = run.evaluation
    try:
        evaluation = read_evaluation_json(run)
        if evaluation is None:
            raise Unavailable(f"no {path.name} in {run.root}: the run is still training, or ran with --evaluation.enabled false")
        for side in ("before", "after", *(["plain_base"] if "plain_base" in evaluation["images"] else [])):
            images = evaluation["images"][side]
            scores = np.asarray(images["scores"], dtype=float).reshape(len(images["prompts"]), len(images["reward_names"]))
            if not len(images["expanded_prompts"]) == len(images["seeds"]) == len(scores):
                raise ValueError(f"{side}: prompts, expanded_prompts, seeds and scores differ in length")
            images["scores"] = scores
    except (ValueError, KeyError, TypeError) as err:
        raise Unavailable(f"cannot read {path}: {type(err).__name__}: {err}") from None
    return evaluation


# ----- figures ----------------------------------------------------------------------------------------
def curve_panel_tags(scalars: Mapping[str, object]) -> tuple[list[str], list[str]]:
    """(rewards, other tags): a panel per reward shows ``reward/<name>/mean``, its ``/std`` band and, with
    ``evaluation.every``, ``heldout/<name>/mean``; then a panel per other tag, |P|/N first."""
    rewards = [tag[len("reward/") : -len("/mean")] for tag in scalars if tag.startswith("reward/") and tag.endswith("/mean")]
    shown_with_rewards = {f"reward/{name}/{stat}" for name in rewards for stat in ("mean", "std")}
    shown_with_rewards |= {f"heldout/{name}/mean" for name in rewards}
    others = sorted((t for t in scalars if t not in shown_with_rewards), key=lambda t: (t != "pareto/selected_fraction", t))
    return rewards, others


def reward_curves_png(scalars: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """One panel per reward (batch mean, ±std band when logged, held-out mean when logged), then one per other
    scalar (|P|/N, losses, KL, norms)."""
    rewards, others = curve_panel_tags(scalars)
    count = len(rewards) + len(others)
    columns = min(3, count)
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    panels = iter(axes.flat)
    for name in rewards:
        panel = next(panels)
        steps, mean = scalars[f"reward/{name}/mean"]
        panel.plot(steps, mean, marker="o", markersize=3, color="tab:blue", label="batch mean")
        if f"reward/{name}/std" in scalars:
            std_steps, std = scalars[f"reward/{name}/std"]
            if np.array_equal(std_steps, steps):
                panel.fill_between(steps, mean - std, mean + std, color="tab:blue", alpha=0.2, label="± std")
        title = f"reward {name}: batch mean ± std"
        if f"heldout/{name}/mean" in scalars:
            panel.plot(*scalars[f"heldout/{name}/mean"], marker="s", markersize=4, color="tab:green", label="held-out mean")
            panel.legend(fontsize="x-small")
            title += ", held-out"
        panel.set_title(title, fontsize="medium")
    for tag in others:
        panel = next(panels)
        steps, values = scalars[tag]
        panel.plot(steps, values, marker="o", markersize=3, color="tab:orange")
        panel.set_title("|P| / batch" if tag == "pareto/selected_fraction" else tag, fontsize="medium")
    for panel in axes.flat:
        if panel.has_data():
            panel.set_xlabel("iteration")
            panel.xaxis.set_major_locator(MaxNLocator(integer=True))
            panel.grid(alpha=0.3)
        else:
            panel.axis("off")
    figure.tight_layout()
    return _png_bytes(figure)


def pareto_plot_png(evaluation: dict) -> bytes:
    """Held-out scores before vs after, each with its front, one panel per reward pair."""
    before, after = evaluation["images"]["before"], evaluation["images"]["after"]
    names = list(before["reward_names"])
    if len(names) < 2:
        raise Unavailable(f"a Pareto plot needs at least 2 rewards; this run has {names}")
    if list(after["reward_names"]) != names:
        raise Unavailable(f"before and after name different rewards: {names} vs {after['reward_names']}")
    with tempfile.TemporaryDirectory() as folder:
        path = pairwise_front_plot(
            {"before": before["scores"], "after": after["scores"]}, names, Path(folder) / "pareto.png",
            title=f"held-out images (N = {len(before['scores'])}): before vs after training",
        )  # fmt: skip
        return path.read_bytes()


def _png_bytes(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


# ----- HTML pieces ------------------------------------------------------------------------------------
def text(value: object) -> str:
    """HTML-escaped text with control characters shown as escapes (expanders can sample them)."""
    raw = str(value)
    return html.escape("".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in raw))


def img_html(png: bytes, alt: str, css_class: str = "figure") -> str:
    return f'<img class="{css_class}" alt="{text(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def unavailable_html(reason: str) -> str:
    return f'<p class="unavailable">not available: {text(reason)}</p>'


def _std(column: np.ndarray) -> float:
    return float(column.std(ddof=1)) if len(column) > 1 else 0.0


def evaluation_table_html(evaluation: dict) -> str:
    """One row per reward: held-out mean ± std of the plain base model (runs that recorded it), before, after, and Δ."""
    before, after = evaluation["images"]["before"], evaluation["images"]["after"]
    plain = evaluation["images"].get("plain_base")
    if plain is not None and list(plain["reward_names"]) != list(before["reward_names"]):
        plain = None
    rows = []
    for k, name in enumerate(before["reward_names"]):
        b, a = float(evaluation["before"][name]), float(evaluation["after"][name])
        cells = [
            *([f"<td>{float(plain['scores'][:, k].mean()):.4f} ± {_std(plain['scores'][:, k]):.4f}</td>"] if plain else []),
            f"<td>{b:.4f} ± {_std(before['scores'][:, k]):.4f}</td>",
            f"<td>{a:.4f} ± {_std(after['scores'][:, k]):.4f}</td>",
            f'<td class="{"up" if a > b else "down" if a < b else ""}">{a - b:+.4f}</td>',
        ]
        rows.append(f'<tr data-reward="{text(name)}"><th>{text(name)}</th>{"".join(cells)}</tr>')
    n = len(before["scores"])
    return (
        f'<table class="evaluation"><caption>mean ± std over {n} held-out image(s) (prompts × seeds)</caption>'
        f"<thead><tr><th>reward</th>{'<th>plain base</th>' if plain else ''}<th>before</th><th>after</th><th>Δ</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def per_image_table_html(evaluation: dict) -> str:
    """One row per held-out image (prompt × seed): its expansions and every reward before → after."""
    before, after = evaluation["images"]["before"], evaluation["images"]["after"]
    if before["prompts"] != after["prompts"] or before["seeds"] != after["seeds"]:
        raise Unavailable("before and after hold different prompts or seeds, so their rows cannot be paired")
    names = before["reward_names"]
    head = "".join(f"<th>{text(n)}<br>before → after</th>" for n in names)
    rows = []
    for j, (prompt, seed) in enumerate(zip(before["prompts"], before["seeds"])):
        scores = "".join(f"<td>{before['scores'][j, k]:.4f} → {after['scores'][j, k]:.4f}</td>" for k in range(len(names)))
        rows.append(
            f'<tr><td class="prompt">{text(prompt)}</td><td>{seed}</td>'
            f'<td class="prompt">{text(before["expanded_prompts"][j])}</td>'
            f'<td class="prompt">{text(after["expanded_prompts"][j])}</td>{scores}</tr>'
        )
    return (
        '<table class="per-image"><thead><tr><th>prompt c</th><th>seed</th><th>ĉ before</th><th>ĉ after</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def sample_caption_html(record: dict) -> str:
    """The caption table of one grid: per image its place, c, ĉ, conditioning prompt, rewards and P membership."""
    names, columns = record["reward_names"], int(record["columns"])
    head = "".join(f"<th>{text(n)}</th>" for n in names)
    rows = []
    per_image = zip(
        record["original_prompts"], record["expanded_prompts"], record["conditioning_prompts"], record["rewards"], record["selected"]
    )
    for i, (c, expanded, conditioning, rewards, selected) in enumerate(per_image):
        scores = "".join(f"<td>{float(r):.4f}</td>" for r in rewards)
        rows.append(
            f'<tr class="{"in-p" if selected else ""}"><td>{i}</td><td>{i // columns + 1}, {i % columns + 1}</td>'
            f'<td class="prompt">{text(c)}</td><td class="prompt">{text(expanded)}</td>'
            f'<td class="prompt">{text(conditioning)}</td>{scores}<td>{"yes" if selected else "no"}</td></tr>'
        )
    return (
        '<table class="captions"><thead><tr><th>#</th><th>row, col</th><th>prompt c</th><th>expansion ĉ</th>'
        f"<th>conditioning</th>{head}<th>in P</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def sample_grids_html(records: Sequence[tuple[Path, dict | None]]) -> str:
    """A figure per checkpoint: the training batch's grid and its caption table."""
    if not records:
        return unavailable_html("no samples/iteration-*.png yet: no checkpoint was written")
    parts = []
    for png, record in records:
        if record is None:
            caption = unavailable_html(f"{png.with_suffix('.json').name} is missing or unreadable")
            title = png.stem
        else:
            try:
                caption = sample_caption_html(record)
            except (KeyError, TypeError, ValueError) as err:
                caption = unavailable_html(f"{png.with_suffix('.json').name} is malformed: {type(err).__name__}: {err}")
            title = f"iteration {record.get('iteration', png.stem)}"
        parts.append(
            f'<figure class="grid"><figcaption><h3>{text(title)}</h3></figcaption>'
            f"{img_html(png.read_bytes(), f'samples of {title}', 'grid')}{caption}</figure>"
        )
    return "".join(parts)


STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: left; vertical-align: top; }
td.prompt { font-family: monospace; max-width: 24em; overflow-wrap: anywhere; }
td.up { color: #070; } td.down { color: #a00; }
tr.in-p { background: #eef7ee; }
img.figure { max-width: 100%; }
img.grid { image-rendering: pixelated; min-width: 12em; max-width: 100%; border: 1px solid #ccc; }
p.unavailable { color: #666; font-style: italic; }
"""


def _section(title: str, build, *args) -> str:
    try:
        body = build(*args)
    except Unavailable as reason:
        body = unavailable_html(str(reason))
    return f"<section><h2>{text(title)}</h2>{body}</section>"


def report_html(run_dir: Path) -> str:
    """The whole page for ``run_dir``; refuses a directory that does not exist or holds no run output."""
    run = open_run(run_dir)
    run_dir = run.root
    has_events = next(run_dir.rglob(EVENT_GLOB), None) is not None or run.curves.is_file()
    records = sample_records(run)
    if not (has_events or run.evaluation.is_file() or records):
        raise ValueError(
            f"{str(run_dir)!r} holds no run output (no {EVENT_GLOB} files, no evaluation.json, no samples/iteration-*.png); "
            "pass the --output_dir of a python -m parrot.train run"
        )

    def curves() -> str:
        try:
            scalars = read_scalars(run_dir)
        except Unavailable as missing:  # logged without TensorBoard: the run's own curves.jsonl (rewards and |P|)
            scalars = read_curves(run)
            if not scalars:
                raise Unavailable(f"{missing}; and no {CURVES_FILE}") from None
        return img_html(reward_curves_png(scalars), "training curves")

    def evaluation_part(build) -> str:
        return build(read_evaluation(run))

    def pareto(evaluation: dict) -> str:
        return img_html(pareto_plot_png(evaluation), "Pareto plot of held-out scores, before vs after")

    sections = [
        _section("Training curves", curves),
        _section("Held-out evaluation: before vs after", evaluation_part, evaluation_table_html),
        _section("Pareto plot (held-out images)", evaluation_part, pareto),
        _section("Held-out images, one row each", evaluation_part, per_image_table_html),
        f"<section><h2>Training samples per checkpoint</h2>{sample_grids_html(records)}</section>",
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>parrot run report: {text(run_dir.resolve().name)}</title><style>{STYLE}</style></head><body>"
        f"<h1>parrot run report</h1><p>run directory: <code>{text(run_dir.resolve())}</code></p>"
        f"{''.join(sections)}</body></html>\n"
    )


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write :func:`report_html` of ``run_dir`` to ``out`` (default ``run_dir/report.html``); returns the path."""
    page = report_html(Path(run_dir))
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):  # RUN_DIR given positionally
        argv = ["--run_dir", argv[0], *argv[1:]]
    config = parse_config(ReportConfig, argv)
    if config.run_dir is None:
        raise UsageError("give the run directory: python -m parrot.report RUN_DIR [--out PATH]")
    out = write_report(config.run_dir, config.out)
    sys.stdout.write(f"wrote {out}\n")
    return out


if __name__ == "__main__":
    run_cli(main)
