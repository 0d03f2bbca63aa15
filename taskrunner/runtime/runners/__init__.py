"""The runners built on a pool (see :mod:`taskrunner.runtime.runner` for their contract).

* :mod:`~taskrunner.runtime.runners.pool_backed`: what every pool-backed runner shares;
* :mod:`~taskrunner.runtime.runners.sequenced`: one at a time in posting order
  (``SequencedTaskRunner``) or up to N at once (``ParallelTaskRunner``);
* :mod:`~taskrunner.runtime.runners.single_thread`: a dedicated thread, with an
  optional bounded queue (backpressure through the C ring);
* :mod:`~taskrunner.runtime.runners.asyncio_runner`: tasks on an asyncio loop.
"""
