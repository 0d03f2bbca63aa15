"""The C core and its typed wrappers: the bottom layer.

``csrc/`` holds three thread-safe structures; :mod:`taskrunner.native._build`
compiles them with cffi (API mode) into the extension ``taskrunner.native._core``.

* :mod:`~taskrunner.native.binding`: ``ffi``/``lib`` and the status codes every
  call returns, turned into exceptions by ``check``;
* :mod:`~taskrunner.native.heap`: the ready queue (a binary heap by priority, FIFO
  within one), which the pool's worker groups block on;
* :mod:`~taskrunner.native.wheel`: the hashed timing wheel of delayed tasks;
* :mod:`~taskrunner.native.ring`: the bounded ring buffer behind backpressure.

Nothing here imports the rest of the package.
"""
