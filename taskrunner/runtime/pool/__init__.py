"""The scheduler: ``ThreadPool``, its worker groups and their C ready queues.

One class assembled from modules with one job each:

* :mod:`.threadpool`: ``ThreadPool`` itself, its construction and post paths;
* :mod:`.workers`: the worker groups and the loop each worker thread runs;
* :mod:`.delayed`: delayed posts and the timer thread's hand-over;
* :mod:`.observe`: metrics, counted and timed without a call on the hot path;
* :mod:`.shutdown`: ``wait_idle``, ``flush`` and the shutdown sequence;
* :mod:`.gate`: category limits; :mod:`.checks`: argument checks;
* :mod:`.batch_post` / :mod:`.batch_watch`: batches of posts, and the watch
  that hands a blocked worker's batch to idle ones;
* :mod:`.state`: the fields the parts share, with what guards each.
"""

from taskrunner.runtime.pool.shutdown import SHUTDOWN_GRACE, ShutdownReport, children_of
from taskrunner.runtime.pool.threadpool import MAX_WORKERS, ThreadPool

__all__ = ["MAX_WORKERS", "SHUTDOWN_GRACE", "ShutdownReport", "ThreadPool", "children_of"]
