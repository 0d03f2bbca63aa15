"""Runnable examples: ``python -m taskrunner.examples.<name>``.

* ``asyncio_service``: an asyncio HTTP service that offloads CPU work to a
  ``ThreadPool`` with priorities and replies on its event loop.
"""
