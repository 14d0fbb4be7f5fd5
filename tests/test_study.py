"""`rnnbench study`: the runner's rows and resume, the measures' relations that always hold,
the verdict rules on summaries whose answer is known, and the report of a real (tiny) run."""
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import impls
from bench.study import report, run, studies
from bench.study.studies import STUDIES, Setting, Study, Task
from bench.train import data


def tiny(study: Study, count: int = 2) -> Study:
    """The study's first `count` settings, as they are (the runner, not the budget, is tested)."""
    return replace(study, settings=study.settings[:count])


def test_every_study_has_a_claim_settings_and_unique_labels():
    for study in STUDIES.values():
        labels = [s.label for s in study.settings]
        assert study.claim and study.question and len(labels) == len(set(labels)) > 1
        for setting, fields in study.configs(epochs=3):
            assert fields["epochs"] == 3
            assert study.fixed_budget is False or fields["patience"] <= 3 or "patience" in setting.config


def test_a_study_writes_one_row_per_setting_and_seed_and_resumes(tmp_path):
    study = tiny(STUDIES["optimisation"])
    calls = []

    def stop_after_one(row, seconds):
        calls.append(row)
        if len(calls) == 1:
            raise KeyboardInterrupt  # as a Ctrl-C after the first row

    with pytest.raises(KeyboardInterrupt):
        run.run_study(study, tmp_path, seeds=2, epochs=2, progress=stop_after_one)
    csv_path = tmp_path / study.name / run.CSV_NAME
    assert len(pd.read_csv(csv_path)) == 1  # the finished row survived
    with pytest.raises(ValueError, match="--resume"):
        run.run_study(study, tmp_path, seeds=2, epochs=2)
    run.run_study(study, tmp_path, seeds=2, epochs=2, resume=True)
    rows = pd.read_csv(csv_path)
    assert sorted(zip(rows["label"], rows["seed"])) == sorted(
        (s.label, seed) for s in study.settings for seed in range(2))
    assert set(rows["status"]) == {"ok"} and rows["test_accuracy"].between(0, 1).all()
    assert (rows["epochs_run"] == 2).all()  # a fixed budget: no early stop
    with pytest.raises(ValueError, match="same --impl and --epochs"):
        run.run_study(study, tmp_path, seeds=2, epochs=3, resume=True)


def test_seeds_differ_and_a_seed_repeats(tmp_path):
    study = tiny(STUDIES["hidden"], 1)  # rnn_tanh H=32 on digits: a fraction of a second
    setting, fields = study.configs(epochs=1)[0]
    backend = impls.get("numpy")
    first = run.run_setting(study, setting, fields, 0, backend)
    again = run.run_setting(study, setting, fields, 0, backend)
    other = run.run_setting(study, setting, fields, 1, backend)
    assert first["test_accuracy"] == again["test_accuracy"]
    assert first["test_accuracy"] != other["test_accuracy"]


def test_a_diverging_setting_is_a_row_not_a_failed_study(tmp_path):
    task = Task("digits")
    study = Study("optimisation", "t", "c", "q", (Setting("sgd lr 1e6", task, {"optimizer": "sgd"},
                  {"optimizer": "sgd", "lr": 1e6, "clip_norm": None}),), {}, 2, studies.optimisation_verdict)
    run.run_study(study, tmp_path, seeds=1, epochs=2)
    rows = pd.read_csv(tmp_path / "optimisation" / run.CSV_NAME)
    assert list(rows["status"]) == ["diverged"]
    summary = report.summarise(report.load_rows(tmp_path / "optimisation"))
    assert int(summary["diverged_sum"].iloc[0]) == 1


def test_the_gradient_reaching_the_first_step_shrinks_with_length():
    """With a contracting recurrence (small W_hh) ||dL/dh_1|| / ||dL/dh_T|| falls
    geometrically with T: what the vanishing study plots."""
    pytest.importorskip("torch", reason="the gradient ratio is float64 autograd (torch)")
    ratios = []
    for seq_len in (5, 20):
        dataset = data.load_synthetic(seq_len=seq_len, n=200)
        params = impls.init_params(8, 16, 4, seed=0, dtype=np.float64)
        params["W_hh"] *= 0.5
        ratios.append(run.gradient_ratio(params, dataset))
    assert 0 < ratios[1] < ratios[0] < 1


def _summary(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in report.FACTORS:
        if column not in frame:
            frame[column] = False if column in report.BOOLEAN else np.nan
    for measure in report.MEASURES:
        for suffix, fill in (("_mean", np.nan), ("_std", 0.0)):
            if measure + suffix not in frame:
                frame[measure + suffix] = fill
    frame["seeds"] = 3
    return frame


def test_vanishing_verdict_reads_the_lengths_each_cell_learns():
    rows = []
    for cell, reach in (("rnn_tanh", 64), ("lstm", 1000), ("gru", 500)):
        for seq_len in (16, 64, 250, 500, 1000):
            rows.append({"label": f"{cell}{seq_len}", "task": "synthetic-start", "cell": cell,
                         "seq_len": seq_len, "test_accuracy_mean": 0.95 if seq_len <= reach else 0.26})
    verdict = studies.vanishing_verdict(_summary(rows), STUDIES["vanishing"])
    assert verdict.startswith("Holds") and "rnn_tanh learns up to T=64, fails from T=250" in verdict
    assert "lstm learns up to T=1000;" in verdict
    flat = [dict(r, test_accuracy_mean=0.95) for r in rows]
    assert studies.vanishing_verdict(_summary(flat), STUDIES["vanishing"]).startswith("Does not hold here")
    short = [dict(r, test_accuracy_mean=0.95 if r["seq_len"] <= 16 else 0.25) for r in rows]
    assert studies.vanishing_verdict(_summary(short), STUDIES["vanishing"]).startswith("Does not hold as stated")


def test_bidirectional_verdict_needs_a_gain_beyond_seed_noise():
    def rows(start_gain):
        out = []
        for task in ("synthetic-start", "synthetic-end"):
            for cell in studies.CELLS:
                for bi in (False, True):
                    gain = start_gain if (task == "synthetic-start" and bi) else 0.0
                    out.append({"label": f"{task}{cell}{bi}", "task": task, "cell": cell, "bidirectional": bi,
                                "test_accuracy_mean": 0.5 + gain, "test_accuracy_std": 0.02})
        return _summary(out)
    assert studies.bidirectional_verdict(rows(0.3), STUDIES["bidirectional"]).startswith("Depends")
    assert studies.bidirectional_verdict(rows(0.01), STUDIES["bidirectional"]).startswith("Does not hold")


def test_report_of_a_real_tiny_run_has_the_claim_table_plot_and_verdict(tmp_path):
    study = tiny(STUDIES["hidden"], 2)
    run.run_study(study, tmp_path, seeds=2, epochs=2)
    folder = tmp_path / "hidden"
    text = report.section(folder)
    assert study.claim in text and "**Verdict:** Holds" in text and (folder / report.PLOT_NAME).stat().st_size > 0
    assert "Incomplete" in text  # 2 of the study's 12 settings ran: the report says rows are missing
    assert text.count("\n| cell H=") == 0 and "| rnn_tanh H=32 | 2 |" in text
    index = report.write_index(tmp_path)
    assert "## Hidden size" in index.read_text()


def test_the_command_runs_a_study_reports_it_and_resumes(tmp_path, capsys):
    from bench.cli import main

    args = ["study", "optimisation", "--epochs", "1", "--seeds", "1", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    report_path = tmp_path / "optimisation" / report.REPORT_NAME
    assert "**Verdict:**" in report_path.read_text() and "1 epochs each (default 30)" in report_path.read_text()
    assert main(args) == 2 and "--resume" in capsys.readouterr().err  # never overwrites a run
    assert main(args + ["--resume"]) == 0  # nothing missing: nothing runs, the report is rewritten
    assert len(pd.read_csv(tmp_path / "optimisation" / run.CSV_NAME)) == len(STUDIES["optimisation"].settings)


def test_trainings_in_worker_processes_give_the_rows_of_one_process(tmp_path):
    """--jobs 2: the same rows (one writer, any order) as one process, seed for seed."""
    study = tiny(STUDIES["optimisation"], 2)
    run.run_study(study, tmp_path / "one", seeds=2, epochs=1, jobs=1)
    run.run_study(study, tmp_path / "two", seeds=2, epochs=1, jobs=2)
    key = ["label", "seed"]
    one = pd.read_csv(tmp_path / "one" / study.name / run.CSV_NAME).sort_values(key).reset_index(drop=True)
    two = pd.read_csv(tmp_path / "two" / study.name / run.CSV_NAME).sort_values(key).reset_index(drop=True)
    assert len(one) == 4
    pd.testing.assert_series_equal(one["test_accuracy"], two["test_accuracy"])
    assert run.default_jobs(STUDIES["optimisation"]) == 1  # timed: never shares the machine by default


def test_estimated_cost_orders_long_gated_trainings_before_short_vanilla_ones():
    from bench.study.run import estimated_cost
    study = STUDIES["vanishing"]
    costs = {setting.label: estimated_cost(setting, fields) for setting, fields in study.configs()}
    assert costs["lstm synthetic-start@1000"] > costs["rnn_tanh synthetic-start@1000"] > \
        costs["lstm synthetic-start@16"] > costs["rnn_tanh synthetic-start@16"]
    assert costs["gru digits-pixels@250"] > costs["gru digits-pixels@64"]


def test_the_summary_follows_the_study_order_whatever_order_the_rows_finished_in():
    study = STUDIES["vanishing"]
    labels = [s.label for s in study.settings]
    rows = pd.DataFrame([{"study": "vanishing", "label": label, "seed": 0, "status": "ok",
                          **{k: None for k in report.FACTORS}, **{k: 0.5 for k in report.MEASURES}}
                         for label in reversed(labels)])  # longest first, as a pool writes them
    assert list(report.summarise(rows, study)["label"]) == labels
    assert list(report.summarise(rows)["label"]) == labels[::-1]
