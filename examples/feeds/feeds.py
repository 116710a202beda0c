"""Import feeds, with hooks that log, count successes and retry a busy server."""

import logging
from pathlib import Path

import tenacity
from gatorapp import App

import cache
import fakeweb

log = logging.getLogger(__name__)

IMPORTED = Path(__file__).parent / "imported"

app = App()


class FeedUnavailable(Exception):
    """The server answered 503: worth trying again soon."""


class FeedNotFound(Exception):
    """Any other failure: retrying will not help."""


# The main task function. Its first retry comes 0.5 s after a failure, then
# 1 s, 2 s, ... up to a minute.
@app.task(backoff=tenacity.wait_exponential(multiplier=0.5, max=60))
def fetch_feeds(feeds):
    for feed_url in feeds:
        resp = fakeweb.get(feed_url)

        if resp.status_code == 503:
            raise FeedUnavailable(feed_url)
        elif resp.status_code != 200:
            raise FeedNotFound(feed_url)

        # Some other processing of the feed data. Writing the same file twice
        # is harmless, so a retry that re-imports earlier feeds does no harm.
        IMPORTED.mkdir(exist_ok=True)
        (IMPORTED / feed_url.rsplit("/", 1)[-1]).write_text(resp.text)

    return len(feeds)


# Hook functions. @app.hook registers them by name, so app.options() and
# .options() can name them and a worker finds them.
@app.hook
def log_start(task):
    log.info("Starting to import feeds via task %s...", task.task_id)


@app.hook
def log_success(task, result):
    log.info("Finished importing %d feeds via task %s.", result, task.task_id)
    cache.incr("feeds_imported", incr_by=result)


@app.hook
def maybe_retry_error(task, err):
    if isinstance(err, FeedUnavailable):
        # Try again soon.
        task.retries += 1
        log.error("Importing feed url %s failed; retrying.", err)
