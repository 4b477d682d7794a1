"""Log lines as JSON (LOG_FORMAT=json): one object per event, with its fields, for a log pipeline.

The code logs events by dotted name with their ids as `extra` (`logger.info("escrow.order_delivered",
extra={"order": pk})`); python-json-logger puts every such field in the object. `TaskContextFilter`
adds the Celery task's id and name to each line logged inside a task, so a delivery's lines can be
followed from the webhook (order, payment) to the worker (task_id) that handed over the keys.
"""

import logging


class TaskContextFilter(logging.Filter):
    """Add `task_id` and `task_name` to records logged while a Celery task runs (nothing otherwise)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from celery import current_task

        task = current_task
        request = getattr(task, "request", None) if task else None
        task_id = getattr(request, "id", None) if request is not None else None
        if task_id and not hasattr(record, "task_id"):
            record.task_id = task_id
            record.task_name = task.name
        return True


def logging_config(*, log_format: str, level: str) -> dict:
    """The LOGGING setting: plain lines (the default) or one JSON object per line."""
    formatters = {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", "message": "event"},
            "timestamp": False,
        },
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"task_context": {"()": "config.log_format.TaskContextFilter"}},
        "formatters": formatters,
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json" if log_format == "json" else "plain",
                "filters": ["task_context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"axes": {"level": "WARNING"}},
    }
