"""Queue two imports: one meets a busy server once, one names a missing feed."""

from feeds import app, fetch_feeds, log_start, log_success, maybe_retry_error

# Now we can use those hooks.
with app.options(on_start=log_start, on_success=log_success, on_error=maybe_retry_error) as opts:
    ok = opts.task(
        fetch_feeds,
        ["http://feeds.example/python.xml", "http://feeds.example/rust.xml"],
    )
    missing = opts.task(fetch_feeds, ["http://feeds.example/missing.xml"])

print(f"queued {ok.id} and {missing.id}")
