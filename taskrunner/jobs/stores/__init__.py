"""The job stores: one contract, three stores, the rules written once.

* :mod:`~taskrunner.jobs.stores.store`: the contract every store keeps
  (:class:`JobStore`), and what the manager may rely on;
* :mod:`~taskrunner.jobs.stores.rules` and :mod:`~taskrunner.jobs.stores.base_store`:
  the argument checks and per-job rules, applied once for every store;
* :mod:`~taskrunner.jobs.stores.sql_store` (with :mod:`~taskrunner.jobs.stores.sql_rows`
  and :mod:`~taskrunner.jobs.stores.sql_schedules`): one SQL store, two dialects;
* the SQLite store (:mod:`~taskrunner.jobs.stores.sqlite_store`, its schema and its
  wake-ups across processes), the PostgreSQL store (``postgres_*``: schema,
  transactions, LISTEN/NOTIFY, transactional enqueue) and the in-memory model
  (:mod:`~taskrunner.jobs.stores.memory_store`);
* :mod:`~taskrunner.jobs.stores.tx_enqueue`: enqueueing in the caller's transaction;
  :mod:`~taskrunner.jobs.stores.schedule_store`: the schedules' storage contract.

The public names are re-exported by :mod:`taskrunner.jobs`.
"""
