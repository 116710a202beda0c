"""A worker that reports through its own logger, results included."""

import logging

from gatorapp import Worker

log = logging.getLogger("myapp.worker")


class LoggingWorker(Worker):
    def starting(self):
        ident = self.ident()
        log.info('%s starting & consuming "%s".', ident, self.to_consume)

        if self.max_tasks:
            log.info("%s will die after %d tasks.", ident, self.max_tasks)
        else:
            log.info("%s will never die.", ident)

    def stopping(self):
        ident = self.ident()
        log.info(
            '%s for "%s" shutting down. Consumed %d tasks.',
            ident,
            self.to_consume,
            self.tasks_complete,
        )

    def result(self, result):
        # Every return value, on this worker's own logger.
        log.info("%s got result %r.", self.ident(), result)
