"""Logging: records on ``taskrunner.<module>`` loggers with structured ``extra``
fields; no ``print``, no root-logger configuration anywhere in the package."""

from __future__ import annotations

import ast
import logging
import threading
from pathlib import Path

import pytest

import taskrunner
from taskrunner import QueuePolicy, SequencedTaskRunner, SingleThreadTaskRunner, ThreadPool

WAIT = 10.0
PACKAGE = Path(taskrunner.__file__).parent

pytestmark = pytest.mark.thread_unsafe(reason="caplog is shared between threads")


def broken_task() -> None:
    raise ValueError("boom")


def records(caplog: pytest.LogCaptureFixture, runner: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "runner", None) == runner]


def test_a_failing_task_is_logged_with_its_name_and_runner(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="taskrunner")
    with ThreadPool(2, name="logpool") as pool:
        seq = SequencedTaskRunner(pool, name="logseq")
        assert pool.post_task(broken_task).wait(WAIT)
        assert seq.post_task(broken_task, name="named-in-seq").wait(WAIT)
        assert pool.wait_idle(WAIT)
    (in_pool,) = records(caplog, "logpool")
    (in_seq,) = records(caplog, "logseq")
    for record in (in_pool, in_seq):
        assert record.name == "taskrunner.pool"
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert in_pool.task_name == "test_logging.broken_task"  # type: ignore[attr-defined]
    assert in_seq.task_name == "named-in-seq"  # type: ignore[attr-defined]


def test_a_failing_error_handler_is_logged_with_the_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bad_handler(exc: BaseException, task: taskrunner.Task) -> None:
        raise RuntimeError("the handler broke")

    with ThreadPool(1, name="loghandler", error_handler=bad_handler) as pool:
        assert pool.post_task(broken_task).wait(WAIT)
        assert pool.wait_idle(WAIT)
    (record,) = records(caplog, "loghandler")
    assert record.name == "taskrunner.pool"
    assert "error handler failed" in record.getMessage()
    assert record.task_name == "test_logging.broken_task"  # type: ignore[attr-defined]


def test_a_failing_rejection_callback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    started, gate = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(WAIT)

    def bad_callback(task: taskrunner.Task, policy: QueuePolicy) -> None:
        raise RuntimeError("callback broke")

    with ThreadPool(1) as pool:
        runner = SingleThreadTaskRunner(
            pool, capacity=2, policy=QueuePolicy.DROP_NEWEST, on_rejected=bad_callback, name="logst"
        )
        runner.post_task(hold)
        assert started.wait(WAIT)
        runner.post_task(lambda: None)
        runner.post_task(lambda: None)
        runner.post_task(lambda: None, name="the-rejected-one")
        gate.set()
        assert runner.wait_idle(WAIT)
        runner.shutdown()
    (record,) = records(caplog, "logst")
    assert record.name == "taskrunner.pool"
    assert record.task_name == "the-rejected-one"  # type: ignore[attr-defined]


def test_the_runtime_leaves_the_root_logger_alone(caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    with ThreadPool(1, name="quiet") as pool:
        assert pool.post_task(broken_task).wait(WAIT)
        assert pool.wait_idle(WAIT)
    assert (list(root.handlers), root.level) == before
    assert all(r.name.startswith("taskrunner.") for r in caplog.records)


# ---- the source itself ---------------------------------------------------------------------

# The command-line application (its output *is* printing) is not the runtime
# (command.py: the `taskrunner dashboard` subcommand).
APP_MODULES = {
    "__main__.py",
    "cli.py",
    "_console.py",
    "demo.py",
    "bench_report.py",
    "command.py",
    "schedule_command.py",
}

ROOT_LOGGING = {
    "logging.basicConfig",
    "logging.debug",
    "logging.info",
    "logging.warning",
    "logging.error",
    "logging.exception",
    "logging.critical",
    "logging.log",
}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _calls_by_function(tree: ast.AST) -> list[tuple[str | None, ast.Call]]:
    """Every call with the name of the function it is in (None: module level)."""
    out: list[tuple[str | None, ast.Call]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
            else:
                if isinstance(child, ast.Call):
                    out.append((function, child))
                visit(child, function)

    visit(tree, None)
    return out


def problems_in(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    problems: list[str] = []
    for function, call in _calls_by_function(tree):
        name = _dotted(call.func)
        where = f"{path.name}:{call.lineno}"
        if name == "print":
            problems.append(f"{where}: print()")
        elif name in ROOT_LOGGING and not (name == "logging.basicConfig" and function == "main"):
            # (a process entry point, main(), may configure logging for its process)
            problems.append(f"{where}: {name}() uses or configures the root logger")
        elif name == "logging.getLogger":
            arg = call.args[0] if call.args else None
            if not (
                isinstance(arg, ast.Constant)
                and isinstance(arg.value, str)
                and (arg.value == "taskrunner" or arg.value.startswith("taskrunner."))
            ):
                problems.append(f"{where}: logging.getLogger() needs a 'taskrunner.<module>' name")
    return problems


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in PACKAGE.rglob("*.py")
        # taskrunner/examples/ holds applications too (they print what they do).
        if p.name not in APP_MODULES and "examples" not in p.relative_to(PACKAGE).parts
    ),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_the_runtime_logs_only_through_taskrunner_loggers(path: Path) -> None:
    assert problems_in(path) == []


def test_the_source_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import logging\n"
        "log = logging.getLogger(__name__)\n"
        "def f():\n"
        "    print('hi')\n"
        "    logging.basicConfig()\n"
        "    logging.info('root')\n"
        "def main():\n"
        "    logging.basicConfig()\n",
        encoding="utf-8",
    )
    assert [p.split(": ", 1)[1] for p in problems_in(bad)] == [
        "logging.getLogger() needs a 'taskrunner.<module>' name",
        "print()",
        "logging.basicConfig() uses or configures the root logger",
        "logging.info() uses or configures the root logger",
    ]
