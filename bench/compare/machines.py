"""Are two runs comparable? The machines and environments of the runs, side by side, and
the decision whether a difference in time can be the code's at all.

Two levels: a different CPU (model, SIMD extensions, core count), GPU or BLAS kernel
(library, version, the kernel architecture OpenBLAS picked) makes the comparison one of
environments, not of code: a loud warning. Other differences (library and Python
versions, the OS kernel, cores available, thread variables) may move times too: a note.
A field one source does not record (pytest-benchmark keeps no BLAS, versions or GPUs) is
'not recorded', and where it decides comparability the warning says it cannot tell.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NOT_RECORDED = "not recorded"
ENV_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")


def _blas_kernels(machine: dict):
    blas = machine.get("blas")
    if blas is None:
        return None
    return "; ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')})"
                     for b in blas) or "none found"


def _blas_threads(machine: dict):
    blas = machine.get("blas")
    return None if blas is None else ", ".join(str(b.get("num_threads")) for b in blas) or "none"


def _gpus(machine: dict):
    if "gpus" not in machine and "nvidia_smi" not in machine:
        return None
    names = [g.get("name") for g in (machine.get("gpus") or machine.get("nvidia_smi") or [])]
    return ", ".join(str(n) for n in names) or "none"


def _simd(machine: dict):
    features = machine.get("cpu_features")
    if not isinstance(features, dict) or "simd" not in features:
        return None
    return " ".join(features["simd"]) or "none"


def _plain(machine: dict, name: str):
    value = machine.get(name)
    return None if value is None else str(value)


# (label, how to read it off a machine dict, what a difference means): "machine" and
# "blas" differences make the comparison one of environments; "note" ones may move times;
# "info" ones are expected (the code changed: that is what is compared).
FIELDS = (
    ("CPU model", lambda m: _plain(m, "cpu_model"), "machine"),
    ("SIMD extensions", _simd, "machine"),
    ("cores", lambda m: _plain(m, "cores"), "machine"),
    ("GPUs", _gpus, "machine"),
    ("BLAS kernel", _blas_kernels, "blas"),
    ("BLAS threads (when meta was written)", _blas_threads, "note"),
    ("cores available", lambda m: _plain(m, "cores_available"), "note"),
    # without the libc part ('-with-glibc2.36'): a pytest-benchmark JSON does not record it
    ("platform", lambda m: None if m.get("platform") is None else str(m["platform"]).split("-with-")[0], "note"),
    ("Python", lambda m: _plain(m, "python"), "note"),
    ("torch threads", lambda m: _plain(m, "torch_threads"), "note"),
    ("torch MKL", lambda m: _plain(m, "torch_mkl"), "note"),
)


def _version_fields(machines: list[dict]):
    packages = dict.fromkeys(p for m in machines for p in (m.get("versions") or {}))
    for package in packages:
        yield (package, lambda m, p=package: None if m.get("versions") is None else
               str(m["versions"].get(p) or "not installed"), "note")


def _env_fields():
    for name in ENV_VARIABLES:
        yield (f"${name}", lambda m, n=name: None if m.get("env") is None else
               str(m["env"].get(n) if m["env"].get(n) is not None else "unset"), "note")


def fields_for(machines: list[dict]):
    return [*FIELDS, *_version_fields(machines), *_env_fields(),
            ("git commit", lambda m: _plain(m, "git_commit"), "info")]


def machine_table(machines: list[dict]) -> list[dict]:
    """One row per field some machine records: its value on each machine (in order),
    whether the recorded ones differ and whether some machine does not record it; a field
    no source records is left out."""
    rows = []
    for label, read, level in fields_for(machines):
        values = [read(m) for m in machines]
        if all(v is None for v in values):
            continue
        known = {v for v in values if v is not None}
        rows.append({"field": label, "values": [NOT_RECORDED if v is None else v for v in values],
                     "differs": len(known) > 1, "partial": None in values, "level": level})
    return rows


@dataclass
class Comparability:
    """BASE and one OTHER: what differs, at each level."""
    machine: list[str] = field(default_factory=list)  # 'CPU model: A → B'
    blas: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # deciding fields one side does not record
    notes: list[str] = field(default_factory=list)

    @property
    def same_machine(self) -> bool | None:
        """False: different; None: cannot tell (a deciding field not recorded)."""
        return False if self.machine else (None if any(u in MACHINE_LABELS for u in self.unknown) else True)

    @property
    def same_blas(self) -> bool | None:
        return False if self.blas else (None if "BLAS kernel" in self.unknown else True)

    @property
    def comparable(self) -> bool:
        return not self.machine and not self.blas


MACHINE_LABELS = tuple(label for label, _, level in FIELDS if level == "machine")


def comparability(base: dict, other: dict) -> Comparability:
    result = Comparability()
    for label, read, level in fields_for([base, other]):
        before, after = read(base), read(other)
        if before is None or after is None:
            if level in ("machine", "blas"):
                result.unknown.append(label)
            continue
        if before != after:
            text = f"{label}: {before} → {after}"
            {"machine": result.machine, "blas": result.blas, "note": result.notes,
             "info": []}[level].append(text)
    return result


def warning_lines(base_label: str, other_label: str, found: Comparability) -> list[str]:
    """Markdown lines for the top of the report: the loud warning when the comparison is
    one of environments, a line when it cannot tell, a note for other differences."""
    lines = []
    if not found.comparable:
        what = " and ".join(w for w, hit in (("machines", found.machine), ("BLAS kernels", found.blas)) if hit)
        lines += [f"> ⚠️ **WARNING: `{other_label}` and `{base_label}` come from different {what}.** "
                  "Their ratios compare environments, not code: a change of speed may be the "
                  "hardware's or the BLAS kernel's alone.",
                  *(f"> - {d}" for d in found.machine + found.blas), ""]
    if found.unknown:
        lines += [f"> ⚠️ **Cannot tell whether `{other_label}` and `{base_label}` ran on the same "
                  f"machine and BLAS kernel**: {', '.join(found.unknown)} not recorded "
                  "on both sides (runs of older versions and pytest-benchmark JSON files keep less: "
                  "the JSON has no BLAS, library versions or GPUs).", ""]
    if found.notes:
        lines += [f"> Note: the environments of `{other_label}` and `{base_label}` differ in "
                  f"{'; '.join(found.notes)}: times may move with these too.", ""]
    return lines
