"""The runtime: tasks, the thread pool and the runners built on it.

Layered on :mod:`taskrunner.native` only.

* values: :mod:`~taskrunner.runtime.clock`, :mod:`~taskrunner.runtime.traits`,
  :mod:`~taskrunner.runtime.task` (the handle and its claim rule);
* the contract every runner implements: :mod:`~taskrunner.runtime.runner`;
* the scheduler: :mod:`taskrunner.runtime.pool` (the ``ThreadPool``, its worker
  groups and loop, its shutdown), fed by :mod:`~taskrunner.runtime.delays`;
* the runners built on a pool: :mod:`taskrunner.runtime.runners`;
* around them: timers, repeating tasks, the executor view, the event bus,
  rejections, the default pool, and the metrics contract
  (:mod:`~taskrunner.runtime.metrics`).

The public names are re-exported by :mod:`taskrunner`.
"""
