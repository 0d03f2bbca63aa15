"""``taskrunner demo``: a realistic run on a SQLite file that checks its own promises.

The flow
--------
1. A fresh SQLite job store and a *runs ledger* (a second SQLite file) are
   made.  Two worker processes start on the store
   (``python -m taskrunner worker --app taskrunner.cli.demo:app``).
2. The parent submits N jobs in waves: fast ones, CPU-bound ones, I/O-like
   ones (some of them delayed), flaky ones that fail on their first attempt
   and succeed on a retry, and one slow job.
3. Meanwhile the parent exercises the runtime on its own pool: tasks of
   mixed priorities, a sequenced runner, a bounded single-thread runner
   pushing back on a fast producer (REJECT and WAIT policies), delayed
   tasks (a quarter of them cancelled) and a fixed-rate repeating task.  The
   progress display itself is fed by a repeating task that samples the store.
4. Midway, the worker running the most attempts is killed with SIGKILL and a
   third worker starts on the same store; the survivors recover the killed
   worker's jobs once their leases expire.  The slow job is cancelled through
   the job manager while it runs.
5. When every job is final the workers get SIGTERM (a graceful stop), and the
   store and the ledger are compared: every job must be in its expected
   final state (the slow one cancelled, the rest succeeded), no attempt may
   have run twice, and no job may have run again after its outcome was
   stored.  The exit code is 0 only if that holds.

The ledger
----------
Every handler run inserts a row (job id, attempt, pid) before it starts and
sets its outcome when it ends (``ok``, ``error``, ``cancelled``); a run cut
short by the SIGKILL keeps a NULL outcome.  A handler that finished just
before the kill, whose outcome the store had not yet recorded, runs again on
recovery: that is at-least-once delivery and is reported, not counted as a
duplicate.  Only a second run of the *same* attempt, or a run after the job's
recorded outcome, is a duplicate.
"""

from taskrunner.cli.demo.app import RUNS_ENV, DemoError, DemoOptions, app
from taskrunner.cli.demo.driver import run_demo

__all__ = ["RUNS_ENV", "DemoError", "DemoOptions", "app", "run_demo"]
