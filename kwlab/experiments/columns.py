"""Result columns: every key of a run's ``results.json`` and every column ``collect_results`` adds to a
results table, declared once by the code that writes it.

The writers declare their columns next to where they write them: :data:`kwlab.experiments.train.
TRAINER_COLUMNS` (:meth:`Trainer.results <kwlab.experiments.train.Trainer.results>`, with
:data:`kwlab.experiments.accuracies.NONFINITE_COLUMNS`), :attr:`FinalProbeCallback.columns
<kwlab.experiments.callbacks.FinalProbeCallback>` and :data:`COLLECTED_COLUMNS` below (the columns
:func:`kwlab.experiments.results.collect_results` adds from the run record). The tables that read them are
derived: :data:`kwlab.experiments.stats.METRICS`, ``BUDGET_COLUMNS`` and ``PROVENANCE_COLUMNS``
(:func:`names`), and ``tests/test_columns.py`` checks that a run writes exactly what is declared.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["COLLECTED_COLUMNS", "KINDS", "Column", "names"]

#: What a column is: a per-run number summarised over seeds (``metric``), a per-configuration constant
#: carried into the summary as it is (``budget``), where and how the run was made (``provenance``, joined
#: with ``;`` in the summary), or per-run bookkeeping that is not summarised (``record``).
KINDS = ("metric", "budget", "provenance", "record")


@dataclass(frozen=True)
class Column:
    """One result column.

    Args:
        name: the key in ``results.json`` / the column of ``results.csv``.
        kind: one of :data:`KINDS`.
        label: how tables and figures name it (default: ``name``).
        higher_is_better: for a metric, whether a larger value is the better one (None: no direction, as
            for the probe's statistics).
    """

    name: str
    kind: str
    label: str = ""
    higher_is_better: bool | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Column {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.higher_is_better is not None and self.kind != "metric":
            raise ValueError(f"Column {self.name!r}: only a metric has a direction (higher_is_better)")
        if not self.label:
            object.__setattr__(self, "label", self.name)


def names(columns: Iterable[Column], kind: str) -> tuple[str, ...]:
    """The names of the columns of ``kind``, in declaration order."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return tuple(c.name for c in columns if c.kind == kind)


#: The columns :func:`kwlab.experiments.results.collect_results` adds to each row from the run's record
#: (config.json), the sweep's record (sweep.json) and the model's parameter breakdown
#: (:func:`kwlab.experiments.results.budget_of`; ``params`` itself is the trainer's).
COLLECTED_COLUMNS = (
    Column("run_id", "record", "run id"),
    Column("in_current_spec", "record", "run of the current sweep file"),
    Column("params_static", "budget", "static parameters"),
    Column("params_warehouse", "budget", "warehouse parameters"),
    Column("params_attention", "budget", "attention parameters"),
    Column("params_other", "budget", "other parameters"),
    Column("num_classes", "budget", "classes"),
    Column("git_revision", "provenance", "git revision"),
    Column("machine", "provenance", "machine"),
    Column("torch_version", "provenance", "torch version"),
    Column("threads", "provenance", "threads"),
    Column("data_notice", "provenance", "data notice"),
)
