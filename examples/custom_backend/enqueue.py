"""Queue three charges; the last one fails and ends in the dead letters."""

from tasks import app, charge

charge.delay("A-1", 1250)
charge.delay("A-2", 990)
charge.delay("A-3", 0)
print(f"queued; {app.backend.len('default')} task(s) waiting")
