"""A study's report: its rows summarised per setting (mean +- std over seeds), one plot, and
the verdict sentence under the article's claim. Reads the study folder only.

    write_report(Path("runs/study/vanishing"))        # -> report.md, plot.png beside the CSV
    write_index(Path("runs/study"))                   # -> one report.md over every study there
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.study.run import CSV_NAME, META_NAME
from bench.study.studies import STUDIES

MEASURES = ("test_accuracy", "val_accuracy", "train_accuracy", "train_val_gap", "seconds",
            "epochs_run", "epochs_to_target", "seconds_to_target", "grad_ratio_init", "grad_ratio_trained")
FACTORS = ("task", "seq_len", "cell", "num_layers", "bidirectional", "hidden_size", "dropout",
           "weight_decay", "early_stopping", "optimizer", "lr", "warmup", "clip_norm")
PLOT_NAME = "plot.png"
REPORT_NAME = "report.md"
BOOLEAN = ("bidirectional", "early_stopping")


def load_rows(folder: Path) -> pd.DataFrame:
    rows = pd.read_csv(Path(folder) / CSV_NAME)
    for column in BOOLEAN:
        rows[column] = rows[column].astype(str).str.lower() == "true"
    return rows


def summarise(rows: pd.DataFrame, study=None) -> pd.DataFrame:
    """One line per setting, in the study's order (its settings' when `study` is given: rows
    are written as trainings finish, longest first), else the rows': its factors, the number
    of seeds, mean and std of each measure over the seeds that finished, `reached` (the
    fraction of seeds that reached the target accuracy) and `diverged_sum`."""
    rows = rows.assign(diverged=(rows["status"] == "diverged").astype(int),
                       reached=rows["epochs_to_target"].notna().astype(float))
    ok = rows[rows["status"] == "ok"]
    order = list(dict.fromkeys(rows["label"]))
    if study is not None:
        rank = {setting.label: i for i, setting in enumerate(study.settings)}
        order.sort(key=lambda label: rank.get(label, len(rank)))
    grouped = rows.groupby("label", sort=False)
    summary = grouped[list(FACTORS)].first()
    summary["seeds"] = grouped["seed"].count()
    summary["diverged_sum"] = grouped["diverged"].sum()
    summary["reached_mean"] = grouped["reached"].mean()
    for measure in MEASURES:
        values = ok.groupby("label")[measure]
        summary[f"{measure}_mean"] = values.mean()
        summary[f"{measure}_std"] = values.std(ddof=1).fillna(0.0)
    return summary.loc[order].reset_index()


def _cell(mean, std, digits=3) -> str:
    if pd.isna(mean):
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _ratio(mean) -> str:
    return "—" if pd.isna(mean) else ("0" if mean == 0 else f"1e{np.log10(mean):.0f}")


def table(summary: pd.DataFrame, study) -> str:
    """The per-setting table, the study's own measures only."""
    columns = [("setting", lambda r: r["label"]), ("seeds", lambda r: str(int(r["seeds"]))),
               ("test accuracy", lambda r: _cell(r["test_accuracy_mean"], r["test_accuracy_std"]))]
    if study.name == "regularisation":
        columns.append(("train - val gap", lambda r: _cell(r["train_val_gap_mean"], r["train_val_gap_std"])))
    if study.name == "optimisation":
        columns += [(f"epochs to {study.target_accuracy:.0%} val", lambda r: _cell(
                        r["epochs_to_target_mean"], r["epochs_to_target_std"], 1)),
                    ("seconds to it", lambda r: _cell(r["seconds_to_target_mean"], r["seconds_to_target_std"], 2)),
                    ("reached", lambda r: f"{r['reached_mean']:.0%}"),
                    ("diverged", lambda r: str(int(r["diverged_sum"])))]
    if study.name == "hidden":
        columns.append(("training seconds", lambda r: _cell(r["seconds_mean"], r["seconds_std"], 2)))
        columns.append(("epochs (early stop)", lambda r: _cell(r["epochs_run_mean"], r["epochs_run_std"], 1)))
    if study.gradient_ratio:
        columns += [("‖∂L/∂h₁‖/‖∂L/∂h_T‖ init", lambda r: _ratio(r["grad_ratio_init_mean"])),
                    ("trained", lambda r: _ratio(r["grad_ratio_trained_mean"]))]
    lines = ["| " + " | ".join(name for name, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fn(row) for _, fn in columns) + " |" for _, row in summary.iterrows()]
    return "\n".join(lines)


def plot(summary: pd.DataFrame, study, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    painter = {"vanishing": _plot_vanishing, "bidirectional": _plot_bidirectional,
               "hidden": _plot_hidden}.get(study.name, _plot_bars)
    fig = painter(plt, summary, study)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_vanishing(plt, summary, study):
    fig, (acc, grad) = plt.subplots(1, 2, figsize=(11, 4))
    for cell, rows in summary.groupby("cell", sort=False):
        for task, style in (("synthetic-start", "-o"), ("digits-pixels", "--s")):
            part = rows[rows["task"] == task].sort_values("seq_len")
            if len(part):
                acc.errorbar(part["seq_len"], part["test_accuracy_mean"], part["test_accuracy_std"],
                             fmt=style, capsize=3, label=f"{cell} {task}")
        part = rows[rows["task"] == "synthetic-start"].sort_values("seq_len")
        for column, style in (("grad_ratio_init_mean", ":x"), ("grad_ratio_trained_mean", "-o")):
            values = part[column].clip(lower=1e-300)
            grad.plot(part["seq_len"], values, style, label=f"{cell} {column.split('_')[2]}")
    acc.axvline(500, color="grey", lw=0.8, ls="--")
    acc.set(xscale="log", xlabel="seq_len", ylabel="test accuracy", title="accuracy after a fixed budget")
    grad.axvline(500, color="grey", lw=0.8, ls="--")
    grad.set(xscale="log", yscale="log", xlabel="seq_len", ylabel="‖∂L/∂h₁‖ / ‖∂L/∂h_T‖",
             title="gradient reaching the first step (synthetic)")
    acc.legend(fontsize=7, loc="best")
    grad.legend(fontsize=7, loc="best")
    return fig


def _plot_bidirectional(plt, summary, study):
    tasks = list(dict.fromkeys(summary["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), sharey=True)
    for ax, task in zip(np.atleast_1d(axes), tasks):
        part = summary[summary["task"] == task]
        cells = list(dict.fromkeys(part["cell"]))
        for offset, bi in ((-0.2, False), (0.2, True)):
            rows = part[part["bidirectional"] == bi].set_index("cell").loc[cells]
            ax.bar(np.arange(len(cells)) + offset, rows["test_accuracy_mean"], 0.4,
                   yerr=rows["test_accuracy_std"], capsize=3, label="bi" if bi else "uni")
        ax.set_xticks(range(len(cells)), cells)
        ax.set_title(task)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy")
    np.atleast_1d(axes)[0].legend(loc="best")
    return fig


def _plot_hidden(plt, summary, study):
    fig, ax = plt.subplots(figsize=(6, 4))
    for cell, rows in summary.groupby("cell", sort=False):
        ax.errorbar(rows["seconds_mean"], rows["test_accuracy_mean"], rows["test_accuracy_std"],
                    xerr=rows["seconds_std"], fmt="-o", capsize=3, label=cell)
        for _, row in rows.iterrows():
            ax.annotate(f"H={int(row['hidden_size'])}", (row["seconds_mean"], row["test_accuracy_mean"]),
                        fontsize=7, textcoords="offset points", xytext=(3, -9))
    ax.set(xscale="log", xlabel="training seconds (to early stop)", ylabel="test accuracy")
    ax.legend(loc="best")
    return fig


BAR_MEASURES = {"optimisation": ("epochs_to_target",), "regularisation": ("test_accuracy", "train_val_gap")}
BAR_LABELS = {"epochs_to_target": "epochs to {target:.0%} validation accuracy",
              "test_accuracy": "test accuracy", "train_val_gap": "train - validation accuracy"}


def _plot_bars(plt, summary, study):
    measures = BAR_MEASURES.get(study.name, ("test_accuracy",))
    fig, axes = plt.subplots(1, len(measures), figsize=(5 + 3 * len(measures), 0.3 * len(summary) + 1.2),
                             sharey=True, squeeze=False)
    y = np.arange(len(summary))
    for ax, measure in zip(axes[0], measures):
        means = summary[f"{measure}_mean"]
        ax.barh(y, means.fillna(0), xerr=summary[f"{measure}_std"], capsize=2)
        for row in y[means.isna().to_numpy()]:  # a bar of 0 would read as "at once"
            ax.annotate("not reached" if measure == "epochs_to_target" else "no finished run",
                        (0, row), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=7, color="firebrick")
        ax.set_xlabel(BAR_LABELS[measure].format(target=study.target_accuracy))
    axes[0][0].set_yticks(y, summary["label"], fontsize=7)
    axes[0][0].invert_yaxis()
    return fig


def section(folder: Path, level: int = 1, draw: bool = True) -> str:
    """The study's Markdown section: claim, what was run, table, plot (drawn unless `draw`
    is False: it already is), verdict."""
    folder = Path(folder)
    meta = json.loads((folder / META_NAME).read_text())
    study = STUDIES[meta["study"]]
    rows = load_rows(folder)
    summary = summarise(rows, study)
    if draw:
        plot(summary, study, folder / PLOT_NAME)
    missing = len(study.settings) * meta["seeds"] - len(rows)
    ran = (f"{len(study.settings)} settings x {meta['seeds']} seeds with `{meta['impl']}`, "
           f"{meta['epochs']} epochs each (default {meta['default_epochs']})"
           + ("" if not study.fixed_budget else ", early stopping off unless the setting turns it on")
           + f", {meta['threads']} thread(s) per training, {meta.get('jobs', 1)} training(s) at once"
           + ("" if meta.get("jobs", 1) == 1 or not study.timed else
              " (seconds then shared the machine: compare them within this run only)")
           + f"; base config {meta['base']}")
    if missing > 0:
        ran += f". **Incomplete: {missing} row(s) missing** (rnnbench study {study.name} --resume)"
    hashes = "#" * level
    return "\n".join([
        f"{hashes} {study.title}", "",
        f"> The article: *{study.claim}*", "",
        f"**Measured:** {study.question}", "",
        f"**Run:** {ran}.", "",
        f"**Verdict:** {study.verdict(summary, study)}", "",
        table(summary, study), "",
        f"![{study.name}]({PLOT_NAME if level == 1 else study.name + '/' + PLOT_NAME})", "",
        "Mean ± standard deviation over seeds; a difference counts as real when it exceeds two "
        "standard errors (with 3 seeds a rough bar, not a formal test).", ""])


def write_report(folder: Path) -> Path:
    path = Path(folder) / REPORT_NAME
    path.write_text(section(folder) + "\n")
    return path


def write_index(out: Path) -> Path:
    """One report over every study folder under `out` (each keeps its own report.md too)."""
    out = Path(out)
    folders = [out / name for name in STUDIES if (out / name / CSV_NAME).exists()]
    parts = ["# rnnbench study: the article's advice, measured", "",
             "Each section quotes the source article's claim, shows what this machine measured and "
             "gives a verdict. Machine and versions: each study's meta.json.", ""]
    for folder in folders:
        write_report(folder)
        parts.append(section(folder, level=2, draw=False))
    path = out / REPORT_NAME
    path.write_text("\n".join(parts) + "\n")
    return path
