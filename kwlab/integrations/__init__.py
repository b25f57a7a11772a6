"""Glue for training loops other than kwlab's: timm's train script (:mod:`kwlab.integrations.timm`) and
PyTorch Lightning (:mod:`kwlab.integrations.lightning`, which imports Lightning only when its callback is
first used). For a plain PyTorch loop use :class:`kwlab.TemperatureScheduler` and
:class:`kwlab.ProbeCallback` directly (README: "Using kwlab in your own training code")."""
