"""What each study runs: its settings (tasks x training configurations), the article's claim
it tests, and the rule that turns the measurements into a one-sentence verdict.

A setting is a TrainConfig (bench.train.loop) on a task; a study runs every setting for
every seed. Budgets are stated in epochs per setting (`Study.epochs`, overridable with
--epochs: fewer steps, never a smaller grid) so that `rnnbench study all` fits its stated
time on a 2-core machine; the report prints what was run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from bench.train import data

CELLS = ("rnn_tanh", "lstm", "gru")


@dataclass(frozen=True)
class Task:
    """A dataset. `seq_len`: the synthetic task's length, or digits-pixels followed by
    N(0, 1) distractor steps up to it (the label still decided by the 64 pixel steps)."""
    name: str  # synthetic-start, synthetic-end, digits, digits-pixels
    seq_len: int | None = None
    # synthetic tasks only: samples before the 60/20/20 split (1000: 200 test sequences,
    # accuracy to +-3 %, and a T=1000 epoch in seconds on 2 cores)
    samples: int = 1000

    @property
    def label(self) -> str:
        return self.name if self.seq_len is None else f"{self.name}@{self.seq_len}"

    def load(self) -> data.Dataset:
        """The same data for every seed (split seed 0): seeds vary initialisation, order and
        dropout, so the spread over seeds is the training's, not the data's."""
        if self.name.startswith("synthetic-"):
            return data.load_synthetic(seq_len=self.seq_len, n=self.samples,
                                       position=self.name.split("-")[1], seed=0)
        loaded = data.load_dataset(self.name, seed=0)
        if self.seq_len is not None:
            loaded = data.pad_with_noise(loaded, self.seq_len, seed=0)
        return loaded

    @property
    def chance(self) -> float:
        return 0.25 if self.name.startswith("synthetic") else 0.1  # 4 and 10 balanced classes


@dataclass(frozen=True)
class Setting:
    label: str  # unique in its study: with the seed, a row's key
    task: Task
    factors: dict  # what this setting varies (table columns, plot axes): {"cell": "lstm", ...}
    config: dict = field(default_factory=dict)  # TrainConfig fields on top of the study's base


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    claim: str  # the article's words (bench seed: SUMMARY.md), quoted in the report
    question: str  # what the measurement asks, in one line
    settings: tuple[Setting, ...]
    base: dict  # TrainConfig fields every setting shares
    epochs: int  # the budget per setting (TrainConfig.epochs)
    verdict: Callable  # (summary frame, study) -> one sentence
    # with early stopping off a setting runs its whole budget: a fixed budget, comparable
    fixed_budget: bool = True
    target_accuracy: float = 0.9  # "time to target": first epoch at this val accuracy
    gradient_ratio: bool = False  # measure ||dL/dh_1|| / ||dL/dh_T|| (vanishing only)
    # reports seconds: its trainings run one at a time by default (bench.study.run.default_jobs)
    timed: bool = False

    def configs(self, epochs: int | None = None) -> list[tuple[Setting, dict]]:
        """(setting, TrainConfig fields) for every setting, with the budget applied."""
        budget = self.epochs if epochs is None else epochs
        out = []
        for setting in self.settings:
            fields = {**self.base, **setting.config, "epochs": budget}
            if self.fixed_budget and "patience" not in setting.config:
                fields["patience"] = budget  # never stops early: every setting gets the budget
            out.append((setting, fields))
        return out


# --- verdict rules: plain functions of the per-setting summary (mean/std/n per measure) ---

def _learned(mean_accuracy: float, chance: float) -> bool:
    """Learned = at least halfway from chance to perfect (0.625 for 4 classes)."""
    return mean_accuracy >= chance + 0.5 * (1 - chance)


def _significant(a_mean, a_std, b_mean, b_std, n) -> bool:
    """a and b differ by more than two standard errors of the difference (n seeds each):
    with 3 seeds a rough bar, stated as such in the report."""
    se = np.sqrt((a_std ** 2 + b_std ** 2) / max(n, 1))
    return abs(a_mean - b_mean) > 2 * max(se, 1e-12)


def vanishing_verdict(summary, study) -> str:
    synth = summary[summary["task"] == "synthetic-start"]
    lengths = sorted(int(t) for t in synth["seq_len"].unique())
    reach, fails = {}, {}
    for cell in CELLS:
        rows = synth[synth["cell"] == cell].sort_values("seq_len")
        learned = [int(t) for t, a in zip(rows["seq_len"], rows["test_accuracy_mean"]) if _learned(a, 0.25)]
        reach[cell] = max(learned, default=0)
        fails[cell] = min((t for t in lengths if t not in learned), default=None)
    says = "; ".join(f"{cell} learns up to T={reach[cell] or 'none'}"
                     + (f", fails from T={fails[cell]}" if fails[cell] else "") for cell in CELLS)
    says = f"on the first-steps task ({says}; T in {', '.join(map(str, lengths))})"
    tanh, gated = reach["rnn_tanh"], max(reach["lstm"], reach["gru"])
    if tanh < 500 and gated > 500:
        return f"Holds: the vanilla cell fails before 500 steps and a gated cell carries the label past it {says}."
    if tanh < 500 and gated > tanh:
        return (f"Partly: the gated cells reach further than the vanilla one, but none carries the "
                f"label to 500 steps within this budget {says}.")
    if tanh < 500:
        return (f"Does not hold as stated: 500 steps is far too generous here, and LSTM/GRU do no better "
                f"than the vanilla cell within this budget {says}.")
    return f"Does not hold here: within this budget 500 steps is no limit for rnn_tanh {says}."


def _effect_sentence(summary, task, cell, measure="test_accuracy"):
    uni = summary[(summary["task"] == task) & (summary["cell"] == cell) & ~summary["bidirectional"]]
    bi = summary[(summary["task"] == task) & (summary["cell"] == cell) & summary["bidirectional"]]
    if not len(uni) or not len(bi):
        return None
    u, b = uni.iloc[0], bi.iloc[0]
    sig = _significant(u[f"{measure}_mean"], u[f"{measure}_std"], b[f"{measure}_mean"],
                       b[f"{measure}_std"], int(u["seeds"]))
    return b[f"{measure}_mean"] - u[f"{measure}_mean"], sig


def bidirectional_verdict(summary, study) -> str:
    effects = {}  # task -> [(cell, bi - uni, significant)]
    for task in ("synthetic-start", "synthetic-end", "digits-pixels"):
        found = [(cell, _effect_sentence(summary, task, cell)) for cell in CELLS]
        effects[task] = [(c, d, sig) for c, e in found if e is not None for d, sig in [e]]

    def helped(task):
        return [c for c, d, sig in effects.get(task, []) if sig and d > 0]

    def changes(task):
        return ", ".join(f"{c} {d:+.2f}" for c, d, _ in effects[task])

    numbers = "; ".join(f"{task}: {changes(task)}" for task in effects if effects[task])
    start, end, real = helped("synthetic-start"), helped("synthetic-end"), helped("digits-pixels")
    if start and not end:
        real_text = (f", and it helps on digits read pixel by pixel ({', '.join(real)})" if real else
                     ", and it gains nothing significant on digits read pixel by pixel")
        return (f"Depends on where the evidence is: a second direction helps when the deciding steps "
                f"are at the start ({', '.join(start)}), not when they are at the end{real_text} "
                f"(test accuracy, bi - uni: {numbers}).")
    if start or end or real:
        return f"Holds in part: bidirectional gains where significant ({numbers})."
    return f"Does not hold here: no significant gain from a second direction ({numbers})."


def regularisation_verdict(summary, study) -> str:
    best = summary.sort_values("test_accuracy_mean", ascending=False).iloc[0]
    baseline = summary[(summary["dropout"] == 0) & (summary["weight_decay"] == 0)
                       & ~summary["early_stopping"]].iloc[0]
    sig = _significant(best["test_accuracy_mean"], best["test_accuracy_std"],
                       baseline["test_accuracy_mean"], baseline["test_accuracy_std"], int(best["seeds"]))
    gap = summary.groupby("dropout")["train_val_gap_mean"].mean()
    text = (f"best setting {best['label']} {best['test_accuracy_mean']:.3f} vs none "
            f"{baseline['test_accuracy_mean']:.3f}; mean train-val gap by dropout "
            + ", ".join(f"{k:g}: {v:+.3f}" for k, v in gap.items()))
    if sig and best["test_accuracy_mean"] > baseline["test_accuracy_mean"]:
        return f"Holds: regularisation beats none beyond seed noise ({text})."
    if gap.iloc[0] - gap.iloc[-1] >= 0.01:  # a point of accuracy: below that, noise at 3 seeds
        return (f"Depends: dropout narrows the train-validation gap but test accuracy does not "
                f"improve beyond seed noise ({text}).")
    return (f"Does not hold here: no regulariser, nor early stopping, helps beyond seed noise, and "
            f"dropout moves the train-validation gap by less than a point ({text}).")


def optimisation_verdict(summary, study) -> str:
    def fastest(rows):
        ok = rows[rows["reached_mean"] >= 0.99]
        return ok.sort_values("epochs_to_target_mean").iloc[0] if len(ok) else None
    adam = fastest(summary[summary["optimizer"] == "adam"])
    sgd = fastest(summary[summary["optimizer"] == "sgd"])
    diverged = int(summary["diverged_sum"].sum())
    runs = int(summary["seeds"].sum())
    def say(row):
        return ("never reached the target" if row is None else
                f"{row['label']} reached {study.target_accuracy:.0%} in "
                f"{row['epochs_to_target_mean']:.1f} epochs / {row['seconds_to_target_mean']:.2f} s")
    text = f"Adam: {say(adam)}; SGD: {say(sgd)}; {diverged} of {runs} runs diverged"
    in_range = adam is not None and adam["lr"] <= 1e-3
    if adam is not None and (sgd is None or adam["epochs_to_target_mean"] < sgd["epochs_to_target_mean"]):
        lr_note = ("and its best lr lies in the article's 1e-3..1e-4" if in_range else
                   f"but its fastest lr is {adam['lr']:g}, above the article's 1e-3..1e-4")
        return f"Holds for Adam, {lr_note} ({text})."
    return f"Does not hold here ({text})."


def hidden_verdict(summary, study) -> str:
    parts = []
    for cell in sorted(summary["cell"].unique()):
        rows = summary[summary["cell"] == cell].sort_values("hidden_size")
        top = rows["test_accuracy_mean"].max()
        enough = rows[rows["test_accuracy_mean"] >= top - 0.01].iloc[0]  # within 1 point of the best
        cost = rows["seconds_mean"].iloc[-1] / max(rows["seconds_mean"].iloc[0], 1e-9)
        parts.append(f"{cell}: within 1 point of its best ({top:.3f}) from H={int(enough['hidden_size'])}; "
                     f"H={int(rows['hidden_size'].iloc[-1])} trains {cost:.1f}x as long as "
                     f"H={int(rows['hidden_size'].iloc[0])}")
    return "Holds: 32-256 spans the useful range here; " + "; ".join(parts) + "."


# --- the studies --------------------------------------------------------------------------

def _vanishing() -> Study:
    settings = []
    for cell in CELLS:
        for seq_len in (16, 32, 64, 128, 500, 1000):
            task = Task("synthetic-start", seq_len)
            settings.append(Setting(f"{cell} {task.label}", task, {"cell": cell, "seq_len": seq_len},
                                    {"cell": cell}))
        for seq_len in (64, 250):
            task = Task("digits-pixels", None if seq_len == 64 else seq_len)
            # batch 128: ~8 updates an epoch on digits' 1078 training images, the synthetic
            # task's ~10 at batch 64: the same budget in updates
            settings.append(Setting(f"{cell} digits-pixels@{seq_len}", task,
                                    {"cell": cell, "seq_len": seq_len}, {"cell": cell, "batch_size": 128}))
    return Study(
        "vanishing", "Sequence length and vanishing gradients",
        "Keep sequences to no more than 500 steps to avoid vanishing gradients; use LSTM/GRU "
        "for long sequences.",
        "Test accuracy after a fixed budget, and ||dL/dh_1|| / ||dL/dh_T|| at initialisation and "
        "after training, versus seq_len, when the label is decided by the first steps.",
        # 40 epochs of ~10 updates: measured here, 8 epochs left every cell at chance even at
        # T=16, 40 epochs brought all three to 0.97-0.99 there: a budget that learns short
        # sequences, so what fails at long ones fails for the length.
        tuple(settings), {"hidden_size": 32, "batch_size": 64, "lr": 5e-3}, epochs=40,
        verdict=vanishing_verdict, gradient_ratio=True)


def _bidirectional() -> Study:
    settings = []
    for task in (Task("synthetic-start", 100), Task("synthetic-end", 100), Task("digits-pixels")):
        batch = {"batch_size": 128} if task.name == "digits-pixels" else {}  # as in vanishing
        for cell in CELLS:
            for bi in (False, True):
                settings.append(Setting(f"{cell} {'bi' if bi else 'uni'} {task.label}", task,
                                        {"cell": cell, "bidirectional": bi},
                                        {"cell": cell, "bidirectional": bi, **batch}))
    return Study(
        "bidirectional", "Bidirectional RNNs",
        "Use bidirectional RNNs to capture two-sided context.",
        "Test accuracy of one direction versus two, per cell, when the deciding steps are at "
        "the start, at the end, and on digits read pixel by pixel.",
        tuple(settings), {"hidden_size": 32, "batch_size": 64, "lr": 5e-3}, epochs=40,
        verdict=bidirectional_verdict)


def _regularisation() -> Study:
    settings = []
    for dropout in (0.0, 0.2, 0.5):
        for weight_decay in (0.0, 1e-5):
            for early in (False, True):
                label = f"dropout {dropout:g}, L2 {weight_decay:g}, early stop {'on' if early else 'off'}"
                config = {"dropout": dropout, "weight_decay": weight_decay}
                if early:
                    config["patience"] = 5
                settings.append(Setting(label, Task("digits"), {"dropout": dropout,
                                        "weight_decay": weight_decay, "early_stopping": early}, config))
    return Study(
        "regularisation", "Dropout, L2 and early stopping",
        "Use dropout 0.2-0.5, L2 regularisation around 1e-5 and early stopping against overfitting.",
        "Test accuracy and the train-validation accuracy gap of a 2-layer LSTM on digits, for "
        "every combination.",
        # batch 64 and lr 3e-3: ~500 updates in 30 epochs, half the cost of batch 32 (the study
        # must fit `study all`'s budget), enough to fit digits to ~0.95 and start overfitting
        tuple(settings), {"cell": "lstm", "num_layers": 2, "hidden_size": 64, "batch_size": 64,
                          "lr": 3e-3}, epochs=30,
        verdict=regularisation_verdict)


def _optimisation() -> Study:
    settings = []
    for optimizer in ("adam", "sgd"):
        for lr in (1e-2, 1e-3, 1e-4):
            for warmup in (0, 3):
                for clip in (1.0, None):
                    label = f"{optimizer} lr {lr:g}, warm-up {warmup}, clip {'1' if clip else 'off'}"
                    settings.append(Setting(label, Task("digits"), {
                        "optimizer": optimizer, "lr": lr, "warmup": warmup, "clipping": clip is not None},
                        {"optimizer": optimizer, "lr": lr, "warmup": warmup, "clip_norm": clip}))
    return Study(
        "optimisation", "Adam, learning rate, warm-up, clipping",
        "Use Adam with a learning rate of 1e-3 to 1e-4, learning-rate warm-up and gradient clipping.",
        "Epochs and seconds to 90 % validation accuracy (the article's rnn_tanh on digits), "
        "and divergences, for every combination.",
        tuple(settings), {"cell": "rnn_tanh", "hidden_size": 64, "schedule": "constant"}, epochs=30,
        verdict=optimisation_verdict, timed=True)


def _hidden() -> Study:
    settings = [Setting(f"{cell} H={h}", Task("digits"), {"cell": cell, "hidden_size": h},
                        {"cell": cell, "hidden_size": h})
                for cell in CELLS for h in (32, 64, 128, 256)]
    return Study(
        "hidden", "Hidden size",
        "Choose a hidden size between 32 and 256.",
        "Test accuracy versus training time for hidden sizes 32 to 256, per cell, on digits.",
        tuple(settings), {}, epochs=30, verdict=hidden_verdict, fixed_budget=False, timed=True)


STUDIES: dict[str, Study] = {s.name: s for s in (_vanishing(), _bidirectional(), _regularisation(),
                                                 _optimisation(), _hidden())}
